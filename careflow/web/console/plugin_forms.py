"""Forms generated from a care plugin's settings schema (pydantic), and form values back to settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    kind: str  # checkbox, number, text, select, json
    value: Any
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: str = "any"


def _resolve(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return {**schema.get("$defs", {}).get(name, {}), **{k: v for k, v in prop.items() if k != "$ref"}}
    if "anyOf" in prop:  # Optional[X]: the first non-null alternative
        options = [p for p in prop["anyOf"] if p.get("type") != "null"]
        if options:
            return {**_resolve(schema, options[0]), **{k: v for k, v in prop.items() if k != "anyOf"}}
    return prop


def form_fields(model: type[BaseModel], values: dict[str, Any]) -> list[FormField]:
    """One field per settings key, in the schema's order, with the value in force."""
    schema = model.model_json_schema()
    fields = []
    for name, raw in schema.get("properties", {}).items():
        prop = _resolve(schema, raw)
        kind = prop.get("type")
        label = str(prop.get("title") or name)
        help_text = str(prop.get("description") or "")
        value = values.get(name, prop.get("default"))
        if "enum" in prop:
            fields.append(
                FormField(name, label, "select", value, help_text, tuple(str(c) for c in prop["enum"]))
            )
        elif kind == "boolean":
            fields.append(FormField(name, label, "checkbox", bool(value), help_text))
        elif kind in ("integer", "number"):
            fields.append(
                FormField(
                    name,
                    label,
                    "number",
                    value,
                    help_text,
                    minimum=prop.get("minimum", prop.get("exclusiveMinimum")),
                    maximum=prop.get("maximum", prop.get("exclusiveMaximum")),
                    step="1" if kind == "integer" else "any",
                )
            )
        elif kind == "string":
            fields.append(FormField(name, label, "text", "" if value is None else value, help_text))
        else:
            fields.append(FormField(name, label, "json", json.dumps(value, ensure_ascii=False), help_text))
    return fields


def values_from_form(fields: list[FormField], form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings values typed from the submitted strings, and per-field problems that typing found."""
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for field in fields:
        raw = form.get(field.name)
        if field.kind == "checkbox":
            values[field.name] = raw is not None
        elif field.kind == "json":
            try:
                values[field.name] = json.loads(raw or "null")
            except json.JSONDecodeError as exc:
                problems[field.name] = f"not valid JSON: {exc.msg}"
        elif field.kind == "number" and raw is not None and raw.strip() == "":
            values[field.name] = None
        else:
            values[field.name] = raw
    return values, problems


def validation_problems(exc: ValidationError) -> dict[str, str]:
    """field name -> what is wrong, in pydantic's words (e.g. "Input should be greater than 0")."""
    problems: dict[str, str] = {}
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else "__all__"
        msg = err["msg"][len("Value error, ") :] if err["msg"].startswith("Value error, ") else err["msg"]
        problems.setdefault(key, msg)
    return problems
