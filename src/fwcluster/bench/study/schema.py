"""``validate``: the problems of a results document against schema ``fwcluster-study/1``
(docs/study-schema.md); empty when it is fine."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fwcluster.bench.study.results import BASELINES, SCHEMA, STATS, setting_name

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
META_KEYS = ("command", "date", "quick", "runs", "count", "loads", "machine")
MACHINE_KEYS = ("hostname", "kernel", "cpus", "python", "packages")
CONFIGURATION_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "name": (str,),
    "instances": (int,),
    "load": (int,),
    "level": _OPT_STR,
    "access": _OPT_STR,
    "confirm": _OPT_STR,
    "follow": _OPT_STR,
    "samples": (int,),
    "failed": (int,),
    "completed": (int,),
    **{f"{p}_{k}": (int,) if k.startswith("p") else _NUM for p in ("connect_us", "total_us") for k in STATS},
    "connections_per_second": _NUM,
    "runs": (list,),
    "p50_over_none": _OPT_NUM,
    "p50_over_kernel": _OPT_NUM,
    "feed_applied_per_connection": _OPT_NUM,
}
RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "run": (int,),
    "started": _NUM,
    "samples": (int,),
    "failed": (int,),
    "completed": (int,),
    "connect_us_p50": (int, type(None)),
    "connections_per_second": _NUM,
}
GOAL_FIELDS: dict[str, tuple[type, ...]] = {
    "goal": (str,),
    "load": (int, type(None)),
    "numerator": (str,),
    "denominator": (str,),
    "value": _OPT_NUM,
    "target": _OPT_NUM,
    "met": (bool, type(None)),
    "missed_by": _OPT_NUM,
}
FINDING_FIELDS: dict[str, tuple[type, ...]] = {
    "claim": (str,),
    "study": (dict,),
    "comparison": (str,),
    "ours": (list,),
}


def _fields(where: str, obj: Any, spec: dict[str, tuple[type, ...]]) -> list[str]:
    """Missing keys and wrong types (a bool is no number here, though Python says it is an int)."""
    if not isinstance(obj, dict):
        return [f"{where}: not an object"]
    problems = []
    for key, types in spec.items():
        if key not in obj:
            problems.append(f"{where}: missing {key!r}")
        elif (isinstance(obj[key], bool) and bool not in types) or not isinstance(obj[key], types):
            problems.append(
                f"{where}: {key!r} is {type(obj[key]).__name__}, not {'|'.join(t.__name__ for t in types)}"
            )
    return problems


def _configuration_problems(c: dict[str, Any]) -> list[str]:
    where = f"configuration {c.get('key', c.get('name', '?'))}"
    if c.get("samples") == 0:  # percentiles of nothing are null: say so once, not per field
        spec = {k: v for k, v in CONFIGURATION_FIELDS.items() if not k.startswith(("connect_us", "total_us"))}
        problems = [f"{where}: no samples (every connection failed or none was made)"]
    else:
        spec, problems = CONFIGURATION_FIELDS, []
    problems += _fields(where, c, spec)
    knobs = (c.get("level"), c.get("access"), c.get("confirm"))
    if c.get("name") in BASELINES and knobs != (None, None, None):
        problems.append(f"{where}: a baseline must have level/access/confirm null")
    follow = c.get("follow")
    if c.get("name") not in BASELINES and (
        None in knobs
        or c.get("name")
        != setting_name(
            str(knobs[0]), str(knobs[1]), str(knobs[2]), follow if isinstance(follow, str) else None
        )
    ):
        problems.append(
            f"{where}: name must be level/access/confirm[+follow], or one of {', '.join(BASELINES)}"
        )
    if c.get("key") != f"{c.get('name')}@{c.get('instances')}x{c.get('load')}":
        problems.append(f"{where}: key must be name@instancesxload")
    for i, r in enumerate(_list(c, "runs")):
        problems += _fields(f"{where} run {i}", r, RUN_FIELDS)
    return problems


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    return value if isinstance(value, list) else []


def validate(doc: Any) -> list[str]:
    """Problems of a results document against schema fwcluster-study/1; empty when it is fine."""
    if not isinstance(doc, dict):
        return ["the document is not an object"]
    problems = [] if doc.get("schema") == SCHEMA else [f"schema is {doc.get('schema')!r}, not {SCHEMA!r}"]
    problems += _fields("document", doc, {"meta": (dict,), "configurations": (list,), "ratios": (dict,),
                                          "goals": (list,), "study_findings": (list,)})  # fmt: skip
    meta: dict[str, Any] = doc["meta"] if isinstance(doc.get("meta"), dict) else {}
    problems += [f"meta: missing {k!r}" for k in META_KEYS if k not in meta]
    if isinstance(meta.get("machine"), dict):
        problems += [f"meta.machine: missing {k!r}" for k in MACHINE_KEYS if k not in meta["machine"]]
    configs = _list(doc, "configurations")
    if not configs:
        problems.append("no configurations")
    for c in configs:
        problems += (
            _configuration_problems(c) if isinstance(c, dict) else ["a configuration is not an object"]
        )
    keys = Counter(str(c.get("key")) for c in configs if isinstance(c, dict))
    problems += [f"configuration {k} appears {n} times" for k, n in sorted(keys.items()) if n > 1]
    for i, g in enumerate(_list(doc, "goals")):
        problems += _fields(f"goal {i}", g, GOAL_FIELDS)
    for i, f in enumerate(_list(doc, "study_findings")):
        problems += _fields(f"study finding {i}", f, FINDING_FIELDS)
    return problems
