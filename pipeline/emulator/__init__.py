"""A local Braintrust-compatible server: the ground truth every btpipe test runs against."""
