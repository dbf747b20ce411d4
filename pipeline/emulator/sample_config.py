"""The configuration objects of the sample project: what a real project keeps beside its rows.

Made once per project (create is get-or-create, so a restart changes nothing), each body checked
by the spec's create schema like a request's, through the same code as the REST routes:

* tags ``prod`` and ``regression``; project scores ``accuracy`` (slider) and ``tone``
  (categorical);
* a tool function ``lookup-order`` (inline Python code, copyable) and a code function
  ``score-latency`` whose code lives in an uploaded bundle (``bundle_id``): a copy cannot
  recreate it;
* two LLM-judge scorer functions (``function_data.type = "prompt"`` with an
  ``llm_classifier`` parser);
* prompts ``summarize`` (two versions: created, then its model changed) and ``support-agent``,
  which calls the tool function by id (``prompt_data.tool_functions``);
* a view of the logs filtered on the ``regression`` tag and sorted by the ``accuracy`` score;
* a span iframe and an automation (a webhook on low accuracy).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from pipeline.emulator import bodies, configobjects
from pipeline.emulator.auth import OrgMembership, Principal
from pipeline.emulator.objects import StoredKind

_MODEL: Final = {"model": "gpt-4o-mini", "params": {"temperature": 0}}


def _chat(system: str, user: str) -> dict[str, Any]:
    return {"type": "chat", "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}  # fmt: skip


def _judge(name: str, slug: str, question: str) -> dict[str, Any]:
    return {
        "name": name,
        "slug": slug,
        "function_type": "scorer",
        "function_data": {"type": "prompt"},
        "description": f"LLM judge: {question}",
        "prompt_data": {
            "prompt": _chat(
                "You grade answers.",
                f"{question}\nQuestion: {{{{input}}}}\nAnswer: {{{{output}}}}\nExpected: {{{{expected}}}}",
            ),
            "options": _MODEL,
            "parser": {"type": "llm_classifier", "use_cot": True, "choice_scores": {"Y": 1, "N": 0}},
        },
    }


def load_config_sample(conn: sqlite3.Connection, project_id: str, org_name: str, email: str) -> None:
    """Create the sample configuration objects in project ``project_id`` of ``org_name`` as the
    user ``email`` (call inside a write)."""
    org_id, user_id = conn.execute(
        "SELECT o.id, u.id FROM orgs o, users u WHERE o.name = ? AND u.email = ?", (org_name, email)
    ).fetchone()
    who = Principal(user_id, email, (OrgMembership(org_id, org_name, "owner"),))

    def create(kind: StoredKind, body: dict[str, Any], *, in_project: bool = True) -> dict[str, Any]:
        full = bodies.create_body(
            f"/v1/{kind}", {**({"project_id": project_id} if in_project else {}), **body}
        )
        obj, _ = configobjects.create(conn, kind, full, who, replace=False)
        return obj

    create("project_tag", {"name": "prod", "color": "#2e7d32", "description": "Production traffic"})
    create("project_tag", {"name": "regression", "color": "#c62828", "description": "Known regressions"})
    create("project_score", {"name": "accuracy", "score_type": "slider", "description": "Answer correctness"})
    create("project_score", {"name": "tone", "score_type": "categorical", "categories": [
        {"name": "friendly", "value": 1}, {"name": "neutral", "value": 0.5}, {"name": "rude", "value": 0}]})  # fmt: skip
    tool = create(
        "function",
        {
            "name": "Lookup order",
            "slug": "lookup-order",
            "function_type": "tool",
            "description": "Finds an order by its number",
            "function_data": {
                "type": "code",
                "data": {
                    "type": "inline",
                    "runtime_context": {"runtime": "python", "version": "3.11"},
                    "code": "def handler(order_number: str) -> dict:\n    return {'order': order_number, 'status': 'shipped'}\n",
                },
            },
            "function_schema": {
                "parameters": {
                    "type": "object",
                    "properties": {"order_number": {"type": "string"}},
                    "required": ["order_number"],
                }
            },
        },
    )
    create("function", {
        "name": "Score latency", "slug": "score-latency", "function_type": "scorer",
        "description": "Bundled code: its source is in an uploaded bundle, not in the API",
        "function_data": {"type": "code", "data": {
            "type": "bundle", "runtime_context": {"runtime": "node", "version": "20"},
            "location": {"type": "experiment", "eval_name": "latency", "position": {"type": "scorer", "index": 0}},
            "bundle_id": "bundle-sample-0001", "preview": "export default ({ metadata }) => metadata.latency < 2",
        }},
    })  # fmt: skip
    create("function", _judge("Factuality judge", "factuality-judge", "Is the answer consistent with the expected answer?"))  # fmt: skip
    create("function", _judge("Helpfulness judge", "helpfulness-judge", "Does the answer help the user?"))
    summarize = create("prompt", {
        "name": "Summarize", "slug": "summarize", "description": "Summarizes a support thread",
        "prompt_data": {"prompt": _chat("Summarize in two sentences.", "{{input}}"), "options": _MODEL},
        "tags": ["prod"], "metadata": {"owner": "support-team"},
    })  # fmt: skip
    if summarize["prompt_data"]["options"]["model"] == _MODEL["model"]:  # the second version, once
        newer = {**summarize["prompt_data"], "options": {**_MODEL, "model": "gpt-4o"}}
        configobjects.patch(conn, "prompt", summarize["id"], {"prompt_data": newer}, who)
    create("prompt", {
        "name": "Support agent", "slug": "support-agent", "function_type": "llm",
        "prompt_data": {
            "prompt": _chat("You answer order questions; look orders up.", "{{input}}"), "options": _MODEL,
            "tool_functions": [{"type": "function", "id": tool["id"]}],
        },
    })  # fmt: skip
    create("view", {
        "object_type": "project", "object_id": project_id, "view_type": "logs", "name": "Regressions",
        "view_data": {"search": {"tag": ["regression"], "sort": [{"field": ["scores", "accuracy"], "dir": "asc"}]}},
        "options": {"columnVisibility": {"metadata": False}},
    }, in_project=False)  # fmt: skip
    create("span_iframe", {"name": "Trace viewer", "url": "https://viewer.example.test/span/{{span_id}}", "post_message": True})  # fmt: skip
    create("project_automation", {
        "name": "Low accuracy alert", "description": "Calls the on-call hook when accuracy drops",
        "config": {"event_type": "logs", "btql_filter": "scores.accuracy < 0.2", "interval_seconds": 3600,
                   "action": {"type": "webhook", "url": "https://hooks.example.test/accuracy"}},
    })  # fmt: skip
