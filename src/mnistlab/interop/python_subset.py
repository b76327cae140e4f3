"""A safe evaluator of the Python subset that model-building code needs, walked with `ast`, never run.

It knows imports (as dotted references, so `keras.layers.Dense` can be told from
`numpy.concatenate`), constants, tuples and lists, arithmetic on small numbers, subscripts, the
shapes of arrays, and `if` statements whose condition it can decide. Everything else evaluates to
`Unknown`, with the line and the reason. Hostile code cannot make it run anything, and the bounds
below keep it from holding the machine (`10**10**10`), passing Python's int-to-str limit, or
exhausting the C stack (a 1,000-term sum): they are checked before anything is evaluated.

Subclasses give calls a meaning (the Keras interpreter builds layers and models from them) and
hear about statements the evaluator does not run, through the hooks `not_read` and `taint`.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any, Callable

MAX_INT_BITS = 64  # larger integer constants and results are not evaluated
MAX_NESTING = 100  # deeper expressions (and notebook JSON) are refused with one line

# --- values the evaluator passes around ---------------------------------------------------------


@dataclass(frozen=True)
class Loc:
    """Where a statement is: its line, and its notebook cell when the code came from a notebook."""

    line: int
    cell: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}" if self.cell is None else f"cell {self.cell} line {self.line}"

    @property
    def suffix(self) -> str:
        return f"line{self.line}" if self.cell is None else f"cell{self.cell}-line{self.line}"


@dataclass(frozen=True)
class Unknown:
    """A value the importer does not compute; `why` says where and what."""

    why: str


@dataclass(frozen=True)
class Ref:
    """A module, class or function reached through imports: a dotted path such as keras.layers.Dense.

    A bare name that was never imported or assigned is `?name`, so a reader can tell it apart.
    """

    path: str


@dataclass(frozen=True)
class Array:
    """A NumPy array whose shape is known (from a dataset's load_data and reshapes)."""

    shape: tuple[int, ...]


@dataclass(frozen=True)
class Method:
    """`owner.name` looked up on a value the evaluator knows, waiting to be called."""

    owner: Any
    name: str


# --- the evaluator ------------------------------------------------------------------------------


class PythonSubset:
    """Walks module-level statements, keeping an environment of plain values and references."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {}
        self.cell: int | None = None
        self.functions: dict[str, Loc] = {}
        self.function_names: dict[str, set[str]] = {}  # the names each function defined in the file uses

    # locations
    def loc(self, node: ast.AST) -> Loc:
        return Loc(getattr(node, "lineno", 0), self.cell)

    def unknown(self, node: ast.AST, what: str | None = None) -> Unknown:
        text = what or f"`{snippet(node)}` is not evaluated"
        return Unknown(f"{self.loc(node)}: {text}")

    # hooks for statements that are not run
    def not_read(self, node: ast.stmt, what: str) -> None:
        """A function, class, loop or undecided `if` is not run; a subclass may record what it holds."""

    def taint(self, node: ast.AST, why: str) -> None:
        """A statement that is not run may change what its names refer to; a subclass may note it."""

    # statements
    def run(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.env[alias.asname] = Ref(alias.name)
                else:
                    top = alias.name.split(".")[0]
                    self.env[top] = Ref(top)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                if alias.name != "*":
                    self.env[alias.asname or alias.name] = Ref(f"{module}.{alias.name}")
        elif isinstance(node, ast.Assign):
            value = self.eval(node.value)
            for target in node.targets:
                self.assign(target, value, node)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self.assign(node.target, self.eval(node.value), node)
        elif isinstance(node, ast.AugAssign):
            current = self.eval(node.target) if isinstance(node.target, ast.Name) else None
            value = self.binop(node.op, current, self.eval(node.value), node) if current is not None else None
            if value is not None:
                self.assign(node.target, value, node)
        elif isinstance(node, ast.Expr):
            self.eval(node.value)
        elif isinstance(node, ast.If):
            self.if_statement(node)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            self.run(node.body)
        elif isinstance(node, ast.Try):
            self.run(node.body)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.env[node.name] = Unknown(f"{self.loc(node)}: '{node.name}' is defined in the file and not evaluated")
            self.functions[node.name] = self.loc(node)
            self.function_names[node.name] = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            self.not_read(node, f"{'function' if not isinstance(node, ast.ClassDef) else 'class'} '{node.name}'")
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            self.not_read(node, "a loop")
            self.taint(node, "used in a loop, which the importer does not run")
            for name in assigned_names(node):
                self.env[name] = Unknown(f"{self.loc(node)}: '{name}' is assigned in a loop")

    def if_statement(self, node: ast.If) -> None:
        branch = self.condition(node.test)
        if branch is True:
            self.run(node.body)
        elif branch is False:
            self.run(node.orelse)
        else:
            self.not_read(node, f"an 'if' whose condition is not known ({self.loc(node)})")
            self.taint(node, "used under a condition that is not known")
            for name in assigned_names(node):
                self.env[name] = Unknown(f"{self.loc(node)}: '{name}' is assigned under a condition that is not known")

    def condition(self, test: ast.expr) -> bool | None:
        if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__":
            other = self.eval(test.comparators[0])
            if other == "__main__" and isinstance(test.ops[0], ast.Eq):
                return True  # the script is what was run
        value = self.eval(test)
        if isinstance(value, (bool, int, float, str)) and not isinstance(value, Unknown):
            return bool(value)
        return None

    def assign(self, target: ast.expr, value: Any, node: ast.stmt) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
            self.bound(target.id, value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            names = target.elts
            if isinstance(value, (tuple, list)) and len(value) == len(names):
                for sub, item in zip(names, value):
                    self.assign(sub, item, node)
            else:
                for sub in names:
                    self.assign(sub, self.unknown(node, f"`{snippet(node)}` is not unpacked"), node)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            root = target
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if isinstance(root, ast.Name):
                self.changed(self.env.get(root.id), target, node)

    def bound(self, name: str, value: Any) -> None:
        """`name = value` was run; a subclass may name the value after its variable."""

    def changed(self, owner: Any, target: ast.expr, node: ast.stmt) -> None:
        """`owner.attr = ...` or `owner[i] = ...` was run; a subclass may object to the change."""

    # expressions
    def eval(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, int) and abs(node.value).bit_length() > MAX_INT_BITS:
                return self.unknown(node, f"an integer of more than {MAX_INT_BITS} bits is not evaluated")
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            return Ref("?" + node.id)
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self.eval(e) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.eval(node.operand)
            return -value if is_number(value) else self.unknown(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node.op, self.eval(node.left), self.eval(node.right), node)
        if isinstance(node, ast.Attribute):
            return self.attribute(self.eval(node.value), node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        return self.unknown(node)

    def binop(self, op: ast.operator, left: Any, right: Any, node: ast.AST) -> Any:
        if is_number(left) and is_number(right):
            operations: dict[type, Callable[[Any, Any], Any]] = {
                ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
                ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Pow: lambda a, b: a**b,
            }
            if isinstance(op, ast.Pow) and _too_big_power(left, right):
                return self.unknown(node, f"`{snippet(node)}` would be larger than {MAX_INT_BITS} bits; not evaluated")
            if type(op) in operations:
                try:
                    result = operations[type(op)](left, right)
                except (ZeroDivisionError, OverflowError, ValueError):
                    return self.unknown(node)
                if isinstance(result, int) and abs(result).bit_length() > MAX_INT_BITS:
                    return self.unknown(node, f"`{snippet(node)}` is larger than {MAX_INT_BITS} bits; not evaluated")
                return result
        if isinstance(left, Array) and is_number(right):
            return left  # x / 255, x - mean: the shape stays
        if isinstance(left, tuple) and isinstance(right, tuple) and isinstance(op, ast.Add):
            return left + right
        return self.unknown(node)

    def attribute(self, owner: Any, node: ast.Attribute) -> Any:
        if isinstance(owner, Ref):
            return Ref(f"{owner.path}.{node.attr}")
        if isinstance(owner, Array):
            if node.attr == "shape":
                return owner.shape
            return Method(owner, node.attr)
        if isinstance(owner, Unknown):
            return owner
        return self.unknown(node)

    def subscript(self, node: ast.Subscript) -> Any:
        owner = self.eval(node.value)
        if isinstance(owner, (tuple, list)):
            if isinstance(node.slice, ast.Slice):
                bounds = (node.slice.lower, node.slice.upper, node.slice.step)
                parts = [self.eval(p) if p is not None else None for p in bounds]
                if all(p is None or isinstance(p, int) for p in parts):
                    return owner[slice(*parts)]
            else:
                index = self.eval(node.slice)
                if isinstance(index, int) and -len(owner) <= index < len(owner):
                    return owner[index]
        return self.unknown(node)

    def call(self, node: ast.Call) -> Any:
        """A call the subset gives no meaning to; subclasses evaluate the calls they know."""
        return self.unknown(node)

    def arguments(self, node: ast.Call,
                  positional: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, ast.AST], list[str]]:
        """Keyword-ordered arguments: (values, their AST nodes, problems)."""
        values: dict[str, Any] = {}
        nodes: dict[str, ast.AST] = {}
        problems: list[str] = []
        for index, arg in enumerate(node.args):
            if isinstance(arg, ast.Starred) or index >= len(positional):
                problems.append(f"{self.loc(arg)}: positional argument `{snippet(arg)}` is not understood")
                continue
            values[positional[index]], nodes[positional[index]] = self.eval(arg), arg
        for keyword in node.keywords:
            if keyword.arg is None:
                problems.append(f"{self.loc(keyword.value)}: `**{snippet(keyword.value)}` is not understood")
                continue
            values[keyword.arg], nodes[keyword.arg] = self.eval(keyword.value), keyword.value
        return values, nodes, problems


# --- helpers ----------------------------------------------------------------------------------


def snippet(node: ast.AST, limit: int = 60) -> str:
    """The source of `node` on one line, cut to `limit` characters: how messages quote code."""
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def callee_tail(func: ast.AST) -> str | None:
    """The called name as written, without its owner: `Dense` for both `Dense(...)` and `layers.Dense(...)`."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def target_name(statement: ast.stmt, call: ast.Call) -> str | None:
    """The variable `call`'s result is assigned to inside `statement`, if a plain name."""
    for node in ast.walk(statement):
        if isinstance(node, ast.Assign) and node.value is call and isinstance(node.targets[0], ast.Name):
            return node.targets[0].id
    return None


def assigned_names(node: ast.AST) -> set[str]:
    """Every name `node` assigns to, anywhere inside it: what a statement not run may change."""
    names: set[str] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Store):
            names.add(inner.id)
    return names


def is_number(value: Any) -> bool:
    """An int or float, and not a bool (Python's bool is an int, model code's True is not 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _too_big_power(base: Any, exponent: Any) -> bool:
    """Whether base**exponent (numbers) would pass MAX_INT_BITS: judged from the operands' sizes,
    without computing it (10**10**10 would take hours and gigabytes)."""
    if not isinstance(base, int) or not isinstance(exponent, int) or exponent <= 0 or abs(base) <= 1:
        return False  # floats overflow to OverflowError quickly; x**0, 1**n, 0**n, n**-k are small
    return (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS


def nesting(tree: ast.AST) -> tuple[int, int]:
    """The deepest nesting in ``tree`` and the line where it is, walked without recursion.

    Checked against MAX_NESTING before evaluating, since the evaluator itself recurses.
    """
    deepest, line = 0, 0
    stack = [(tree, 1, 0)]
    while stack:
        node, depth, lineno = stack.pop()
        lineno = getattr(node, "lineno", lineno)
        if depth > deepest:
            deepest, line = depth, lineno
        stack.extend((child, depth + 1, lineno) for child in ast.iter_child_nodes(node))
    return deepest, line


def value_text(value: Any) -> str:
    """An evaluated value as a message quotes it: references by their path, unknowns as such."""
    if isinstance(value, Ref):
        return value.path.lstrip("?")
    if isinstance(value, Unknown):
        return "(not evaluated)"
    return repr(value)


def reshape(array: Array, shape: list[Any]) -> Array | None:
    """NumPy's reshape on a known shape (one -1 allowed), or None when it would fail or is unknown."""
    if not all(isinstance(s, int) for s in shape):
        return None
    total = math.prod(array.shape)
    if shape.count(-1) == 1:
        known = math.prod(s for s in shape if s != -1)
        if known <= 0 or total % known:
            return None
        shape = [total // known if s == -1 else s for s in shape]
    return Array(tuple(shape)) if math.prod(shape) == total else None
