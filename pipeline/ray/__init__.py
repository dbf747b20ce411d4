"""btpipe on Ray (the ``btpipe[ray]`` extra): Ray Data's datasource and datasink, and the engine.

- :func:`read_braintrust` / :class:`BraintrustDatasource`: a project's rows as a Dataset,
  read as ``btpipe export`` reads them, one read task per range of the export plan;
- :func:`write_braintrust` / :class:`BraintrustDatasink`: a Dataset's rows into a project,
  written as ``btpipe import`` writes them;
- :func:`request_budget`: one request rate for a whole cluster (:mod:`pipeline.ray.budget`);
- :mod:`pipeline.ray.engine`: ``btpipe export --engine ray`` and ``btpipe import --engine ray``.
"""

from pipeline.ray.budget import request_budget
from pipeline.ray.datasink import BraintrustDatasink, write_braintrust
from pipeline.ray.datasource import BraintrustDatasource, read_braintrust

__all__ = [
    "BraintrustDatasink",
    "BraintrustDatasource",
    "read_braintrust",
    "request_budget",
    "write_braintrust",
]
