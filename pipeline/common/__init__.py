"""Shared plumbing every stage imports: storage, manifests, the JSON codec, state, errors."""
