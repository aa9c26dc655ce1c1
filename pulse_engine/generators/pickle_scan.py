"""Budgets for untrusted pickles, checked on the opcode stream before anything is unpickled.

Unpickling builds objects whose shape the file chooses. Two things go wrong on hostile input even
when no global is allowed: nesting (a 200 KB stream of ``TUPLE1`` opcodes gives a tuple 200,000
levels deep; hashing it as a dict key recurses in C and segfaults CPython and torch's weights-only
loader alike) and sheer size. :func:`scan_pickle` walks one pickle's opcodes with
:func:`pickletools.genops` (an iterative parser that builds nothing) and simulates only the
*nesting depth* of every stack entry:

- a value pushed from the stream (number, string, bytes, empty container) has depth 0;
- an opcode that builds from popped entries (``TUPLE*``, ``REDUCE``, ``NEWOBJ``, ``BINPERSID``, …)
  pushes depth 1 + the deepest popped entry;
- an opcode that fills a container (``APPEND(S)``, ``SETITEM(S)``, ``ADDITEMS``, ``BUILD``)
  raises the container's own depth to 1 + the deepest item added; memo entries (``PUT``/``GET``)
  refer to the same simulated object, so a container filled after it was memoised is tracked.

A container already placed inside another one and filled afterwards through the memo can end up
deeper than simulated; that needs mutable containers (lists, dicts, sets), whose C traversals
(``repr``, comparison, deallocation) are recursion-guarded, unlike the hashing of nested tuples,
which are immutable and therefore simulated exactly.

The scan also bounds the number of opcodes and memo entries and refuses malformed streams
(stack underflow, unknown opcodes, truncation), each with one line: :class:`PickleBudgetError`
or :class:`MalformedPickle`.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from dataclasses import dataclass
from typing import IO

__all__ = ["DEFAULT_BUDGET", "LoadBudget", "MalformedPickle", "PickleBudgetError", "scan_pickle"]


class PickleBudgetError(pickle.UnpicklingError):
    """The pickle exceeds a budget; the message is one short line."""


class MalformedPickle(pickle.UnpicklingError):
    """The file is truncated or damaged (not a well-formed pickle or torch file); one short line."""


@dataclass(frozen=True)
class LoadBudget:
    """Limits for reading one untrusted weights file (generous for real checkpoints).

    Attributes:
        max_file_bytes: the file itself (NVIDIA's 1024 px StyleGAN2 pickle is ≈ 380 MB).
        max_pickle_bytes: one pickle stream inside a torch zip file (``data.pkl``).
        max_depth: nesting depth of any object (the NVlabs test pickle nests 25–32 levels).
        max_opcodes: opcodes in one pickle (the 32 px NVlabs test pickle has 6,824; the scan walks
            ≈ 10⁵ opcodes a second, so this also bounds the time spent).
        max_memo: memo entries in one pickle.
        max_tensors: tensors in one file.
        max_tensor_dims: dimensions of one tensor.
    """

    max_file_bytes: int = 4 << 30
    max_pickle_bytes: int = 256 << 20
    max_depth: int = 100
    max_opcodes: int = 500_000
    max_memo: int = 2_000_000
    max_tensors: int = 200_000
    max_tensor_dims: int = 8


DEFAULT_BUDGET = LoadBudget()

_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}


class _Node:
    """One simulated object: only its nesting depth is tracked."""

    __slots__ = ("depth",)

    def __init__(self, depth: int) -> None:
        self.depth = depth


def scan_pickle(source: bytes | IO[bytes], budget: LoadBudget = DEFAULT_BUDGET) -> int:
    """Check one pickle against ``budget`` without unpickling it; returns its length in bytes.

    Args:
        source: the pickle's bytes, or a binary stream positioned at its start (left positioned
            just after its STOP opcode, so concatenated pickles can be scanned one by one).
        budget: the limits.

    Raises:
        PickleBudgetError: depth, opcode or memo budget exceeded.
        MalformedPickle: a truncated or malformed stream.
    """
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    start = stream.tell()
    stack: list[_Node] = []
    marks: list[int] = []  # stack heights at each MARK
    memo: dict[int, _Node] = {}
    count = 0
    name = ""
    try:
        for opcode, arg, _pos in pickletools.genops(stream):
            count += 1
            if count > budget.max_opcodes:
                raise PickleBudgetError(f"pickle has more than {budget.max_opcodes:,} opcodes")
            name = opcode.name
            if name in _PUTS:
                memo[len(memo) if name == "MEMOIZE" else int(arg)] = _top(stack, marks)
                if len(memo) > budget.max_memo:
                    raise PickleBudgetError(f"pickle has more than {budget.max_memo:,} memo entries")
                continue
            if name in _GETS:
                if int(arg) not in memo:
                    raise MalformedPickle("malformed pickle: memo lookup of a missing entry")
                stack.append(memo[int(arg)])
                continue
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name == "DUP":
                stack.append(_top(stack, marks))
                continue
            popped = _pop_operands(stack, marks, opcode)
            if name == "STOP":
                break
            if name in _MUTATORS:
                target, items = popped[0], popped[1:]
                target.depth = max(target.depth, 1 + max((n.depth for n in items), default=-1))
                node = target
            else:
                node = _Node(1 + max((n.depth for n in popped), default=-1) if popped else 0)
            if node.depth > budget.max_depth:
                raise PickleBudgetError(f"pickle nests objects more than {budget.max_depth} levels deep")
            stack.extend([node] * len(opcode.stack_after))
    except pickle.UnpicklingError:
        raise
    except (ValueError, EOFError, OverflowError, MemoryError) as exc:  # genops on a malformed stream
        raise MalformedPickle(f"malformed pickle ({type(exc).__name__})") from None
    if name != "STOP":
        raise MalformedPickle("truncated pickle (no STOP opcode)")
    return stream.tell() - start


def _top(stack: list[_Node], marks: list[int]) -> _Node:
    if len(stack) <= (marks[-1] if marks else 0):
        raise MalformedPickle("malformed pickle: stack underflow")
    return stack[-1]


def _pop_operands(stack: list[_Node], marks: list[int], opcode: pickletools.OpcodeInfo) -> list[_Node]:
    """Pop what ``opcode`` consumes: the entries above the last MARK (for mark opcodes) and its
    fixed operands below that; returns them bottom first."""
    before = opcode.stack_before
    sliced: list[_Node] = []
    fixed = len(before)
    if pickletools.markobject in before:
        if not marks:
            raise MalformedPickle("malformed pickle: no MARK for a mark opcode")
        fixed = before.index(pickletools.markobject)
        height = marks.pop()
        sliced = stack[height:]
        del stack[height:]
    floor = marks[-1] if marks else 0
    if fixed > len(stack) - floor:
        raise MalformedPickle("malformed pickle: stack underflow")
    operands = stack[len(stack) - fixed:] if fixed else []
    del stack[len(stack) - fixed:]
    return operands + sliced
