"""A recipe's stated goal, checked against its summary: pass, fail, or undetermined.

A goal is either a callable ``goal(summary) -> bool | None | (bool | None, str)`` or a small
expression over the flat summary keys, tokens separated by spaces::

    "speedup_ticket_vs_dense >= 1.5"
    "sst/val_ppl < lora/val_ppl and gap_reduction >= 0.5"
    "structured_acc >= dense_acc - 0.02"

Operands are numbers or summary keys (keys may contain ``/``, ``.`` and ``-``; booleans count
as 1 / 0); arithmetic
``+ - * /`` (with the usual precedence), comparisons ``< <= > >= == !=`` and ``and`` / ``or``.
A key that is missing, ``None`` or not a number makes the result ``None`` ("not determined"),
never a silent pass.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

_CMP: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
}


class GoalSyntaxError(ValueError):
    """A goal expression that does not parse (a bug in the recipe's declaration)."""


class _Missing(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _number(tok: str) -> float | None:
    try:
        return float(tok)
    except ValueError:
        return None


def _value(tok: str, summary: Mapping[str, Any], used: dict[str, Any]) -> float:
    n = _number(tok)
    if n is not None and tok not in summary:
        return n
    v = summary.get(tok)
    used[tok] = v
    if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        raise _Missing(tok)
    return float(v)  # True / False count as 1 / 0


def _arith(tokens: list[str], summary: Mapping[str, Any], used: dict[str, Any]) -> float:
    """Evaluate ``a op b op c ...`` with * and / before + and -."""
    if not tokens or len(tokens) % 2 == 0:
        raise GoalSyntaxError(f"expected `value [op value ...]`, got {' '.join(tokens)!r}")
    terms: list[float] = []
    signs: list[str] = []
    cur = _value(tokens[0], summary, used)
    for i in range(1, len(tokens), 2):
        op, tok = tokens[i], tokens[i + 1]
        if op not in _ARITH:
            raise GoalSyntaxError(f"unknown operator {op!r} (use + - * / between spaced tokens)")
        v = _value(tok, summary, used)
        if op in "*/":
            cur = _ARITH[op](cur, v) if not (op == "/" and v == 0) else math.inf
        else:
            terms.append(cur)
            signs.append(op)
            cur = v
    terms.append(cur)
    out = terms[0]
    for op, t in zip(signs, terms[1:]):
        out = _ARITH[op](out, t)
    return out


def _clause(tokens: list[str], summary: Mapping[str, Any], used: dict[str, Any]) -> bool:
    idx = [i for i, t in enumerate(tokens) if t in _CMP]
    if len(idx) != 1:
        raise GoalSyntaxError(f"each clause needs exactly one comparison, got {' '.join(tokens)!r}")
    i = idx[0]
    return _CMP[tokens[i]](_arith(tokens[:i], summary, used), _arith(tokens[i + 1:], summary, used))


def check_expression(expr: str) -> None:
    """Raise :class:`GoalSyntaxError` if ``expr`` does not parse (keys are not looked up)."""
    evaluate_goal(expr, _AnyNumber())


class _AnyNumber(dict):  # every key is present with the value 1.0 (syntax check only)
    def get(self, key: str, default: Any = None) -> Any:  # noqa: ARG002
        return 1.0

    def __contains__(self, key: object) -> bool:
        return _number(str(key)) is None


def evaluate_goal(goal: str | Callable[..., Any] | None, summary: Mapping[str, Any]) -> dict[str, Any]:
    """``{"passed": True | False | None, "detail": "..."}`` for ``goal`` on a flat ``summary``.

    ``passed`` is None when the goal is not declared or a value it needs is missing / None.
    """
    if goal is None or goal == "":
        return {"passed": None, "detail": "no goal declared"}
    if callable(goal):
        try:
            res = goal(summary)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            return {"passed": None, "detail": f"not determined ({type(e).__name__}: {e})"}
        passed, detail = (res if isinstance(res, tuple) else (res, ""))
        return {"passed": None if passed is None else bool(passed), "detail": detail}
    used: dict[str, Any] = {}
    try:
        ors = []
        for disj in _split(goal.split(), "or"):
            ors.append(all(_clause(conj, summary, used) for conj in _split(disj, "and")))
        passed: bool | None = any(ors)
    except _Missing as m:
        what = "missing from the summary" if m.key not in summary else f"{_show(summary.get(m.key))} (undefined)"
        return {"passed": None, "detail": f"not determined: {m.key} is {what}"}
    detail = ", ".join(f"{k} = {_show(v)}" for k, v in used.items())
    return {"passed": passed, "detail": detail}


def _split(tokens: list[str], word: str) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for t in tokens:
        if t == word:
            out.append([])
        else:
            out[-1].append(t)
    if any(not part for part in out):
        raise GoalSyntaxError(f"empty clause around {word!r}")
    return out


def _show(v: Any) -> str:
    if v is None:
        return "None"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


__all__ = ["GoalSyntaxError", "check_expression", "evaluate_goal"]
