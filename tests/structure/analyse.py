"""Structural measures of src/virtnet (issue #17), from the source alone: stdlib ``ast`` only,
nothing imported from the package, so it measures any tree (``--src``); most of its second or
two is ast.parse.

Each measure is a figure and its offenders (``file:line``, relative to the package directory).
What is counted (chosen so that a figure goes down only by a real change):

- Imports under ``if TYPE_CHECKING:`` never run: left out of (a), (c) and of the uses in
  (f)/(g); they still resolve annotations for (b). Import bindings are per module (a local
  ``import x`` binds ``x`` in the whole module). An edge goes to the module named, not to
  its parent packages. Units are the top-level modules and the subpackages (``host/``).
- (a) every executed import of a virtnet module, function-local ones included (Tarjan SCC).
  Names of modules given to ``importlib.import_module`` as constants count only in
  ``a_dynamic_units``.
- (b) a private name (``_x``, not dunder, not ``_replace``/``_fields_``-like API) of another
  virtnet module: ``from m import _x``; ``m._x``; ``obj._x`` where obj is a parameter, name
  or ``self`` attribute annotated with / assigned a call of a class of another module that
  defines ``_x``; ``self._x`` in a subclass of such a class.
- (e) calls of EFFECT_CALLS, ``os.open`` of a /dev path or of a device/node/tun/tap name,
  opens and writes of /proc and /sys paths, ctypes libc calls; (e3) other calls on a /proc
  or /sys path; (e2) calls of host/ functions and non-data classes other than ``Host``,
  and of ``x.netlink.*``/``x.nftables.*`` (the handle's insides).
- (h) unreached: a function whose name is referenced in src (name, attribute, imported
  name, identifier-only string constant; docstrings not) only from inside itself, a function
  of the same name, or another unreached function. Never counted: dunders, entry points,
  registered (decorated) functions, methods of classes with a base outside virtnet, and
  virtnet/testing (the test kit, reached from tests).
- (f) a declared dependency not imported outside unreached functions. (g) imports of
  packages that only the optional (test) extras declare.
- (i) ``str(e)``/``repr(e)`` of an ``except`` name, ``e.args``/``.message``/``.msg``/
  ``.strerror`` and any ``.stderr`` inside ``in``/``==``/``!=``, ``startswith``-like calls
  or regex matches; one site per statement.
- (j) groups of forward modes: own bridge (none nat route open, ``has_own_bridge``), uplink
  (bridge private vepa passthrough, ``uses_macvtap``), hostdev. A function decides the
  family when its tests (comparisons, ``match``, dict keys) touch two groups; drivers/,
  model.py and xml/ (the mode's own syntax) are not counted. (j2) any mode test there.
- (k) classes named ``*Journal*`` (not Protocols) or built on ``AppendedLines``; functions
  with a loop over ``reversed``/``sorted(reverse=)``/a negative range or slice that undoes
  (calls an undo/revert/recover/remove/restore/rollback name, or is such a function), or
  that hand a reversed sequence to such a function.
- (l) functions comparing ``.op`` with two or more strings (literals or module constants such
  as ``APPLIES_NEW``); (l2) every such comparison.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "virtnet"
MODULE_LIMIT, CLASS_LIMIT = 600, 300
EFFECT_CALLS = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output", "getoutput",
                   "getstatusoutput"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell", "open_unix_connection",
                "start_unix_server"},
    "os": {"kill", "killpg", "fork", "forkpty", "system", "popen", "execv", "execve", "execvp",
           "execvpe", "execl", "execlp", "posix_spawn", "posix_spawnp", "waitpid", "wait",
           "wait4", "unshare", "setns", "mknod", "mkfifo", "setsid", "setuid", "setgid",
           "setgroups", "setresuid", "setresgid", "chroot", "pidfd_open", "_exit"},
    "signal": {"pthread_kill", "raise_signal", "pidfd_send_signal"},
    "socket": {"socket", "socketpair", "create_connection", "create_server", "fromfd",
               "send_fds", "recv_fds"},
    "fcntl": {"ioctl", "flock", "lockf"},
    "ctypes": {"CDLL", "cdll.LoadLibrary"},
    "pty": {"fork", "spawn"},
}
LIBC_CALLS = {"mount", "umount", "umount2", "unshare", "setns", "pivot_root", "mallopt"}
DEVICE_WORDS = re.compile(r"device|node|tun|tap")
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make", "_field_defaults", "_value_",
                     "_name_", "_missing_", "_generate_next_value_", "_fields_", "_pack_"}
PURE_DECORATORS = {"staticmethod", "classmethod", "property", "cached_property", "cache",
                   "lru_cache", "abstractmethod", "override", "setter", "deleter",
                   "contextmanager", "asynccontextmanager"}
INERT_BASES = {"object", "Protocol", "Generic", "NamedTuple", "TypedDict", "Enum", "IntEnum",
               "StrEnum", "Exception", "BaseException", "ValueError", "RuntimeError", "OSError",
               "TypeError", "KeyError", "LookupError"}
MODE_GROUPS = {"NONE": "own", "NAT": "own", "ROUTE": "own", "OPEN": "own", "BRIDGE": "uplink",
               "PRIVATE": "uplink", "VEPA": "uplink", "PASSTHROUGH": "uplink",
               "HOSTDEV": "hostdev", "has_own_bridge": "own", "uses_macvtap": "uplink"}
MESSAGE_ATTRS = {"args", "message", "msg", "strerror"}
TEXT_METHODS = {"startswith", "endswith", "find", "index", "rfind", "count"}
REGEX_METHODS = {"match", "search", "fullmatch", "findall", "finditer"}
UNDO_WORDS = re.compile(r"undo|revert|recover|rollback|remove|restore", re.I)
FUNCS = ast.FunctionDef | ast.AsyncFunctionDef


class Ctx:
    """Where a node is: its enclosing classes and functions, and under TYPE_CHECKING or not."""

    __slots__ = ("scope", "tc", "func", "cls", "qual", "funcs")

    def __init__(self, scope: tuple[ast.AST, ...], tc: bool) -> None:
        self.scope, self.tc = scope, tc
        self.funcs = tuple(n for n in scope if isinstance(n, FUNCS))
        self.func = self.funcs[-1] if self.funcs else None
        self.cls = next((n for n in reversed(scope) if isinstance(n, ast.ClassDef)), None)
        self.qual = ".".join(n.name for n in scope) or "<module>"  # type: ignore[attr-defined]

    def where(self, mod: Module, node: ast.AST) -> str:
        return f"{mod.rel}:{(self.func or node).lineno} {self.qual}"  # type: ignore[attr-defined]


@dataclass
class Module:
    name: str
    rel: str
    tree: ast.Module
    lines: int
    is_package: bool
    binds: dict[str, str] = field(default_factory=dict)  # local name -> dotted target
    nodes: list[tuple[ast.AST, Ctx, ast.AST]] = field(default_factory=list)

    @property
    def unit(self) -> str:
        parts = self.name.split(".")[1:]
        return "(package)" if not parts else parts[0] + "/" if len(
            parts) > 1 or self.is_package else parts[0]

    def under(self, sub: str) -> bool:
        """In a package named SUB at any depth (host/, drivers/ stay found when plan/drivers/
        and spec/xml/ take them in), or a module of that name (model)."""
        return sub in self.name.split(".")[1:]


_FIELDS: dict[type, tuple[str, ...]] = {}


def _kids(node: ast.AST) -> list[ast.AST]:
    """Child nodes without operators and load/store markers (the hot loop of the walk)."""
    fields = _FIELDS.get(node.__class__)
    if fields is None:
        fields = _FIELDS[node.__class__] = tuple(
            f for f in node._fields if f not in ("ctx", "op", "ops", "type_comment"))
    out: list[ast.AST] = []
    for name in fields:
        value = getattr(node, name, None)
        if value.__class__ is list:
            out += [x for x in value if isinstance(x, ast.AST)]
        elif isinstance(value, ast.AST):
            out.append(value)
    return out


def _walk(mod: Module) -> None:
    """Every node in source order with its Ctx and its statement."""
    stack: list[tuple[ast.AST, Ctx, ast.AST]] = [(n, Ctx((), False), n) for n in
                                                 reversed(mod.tree.body)]
    pop, push, keep = stack.pop, stack.extend, mod.nodes.append
    while stack:
        node, ctx, stmt = item = pop()
        keep(item)
        if isinstance(node, ast.expr):  # most nodes: the scope and statement carry on
            push([(n, ctx, stmt) for n in reversed(_kids(node))])
            continue
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name | ast.Attribute) and \
                getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            inner = Ctx(ctx.scope, True)
            todo = [(n, inner, n) for n in node.body] + [(n, ctx, n) for n in node.orelse]
        elif isinstance(node, ast.ClassDef | FUNCS):
            inner = Ctx((*ctx.scope, node), ctx.tc)
            todo = [(n, ctx, stmt) for n in [*node.decorator_list, *getattr(node, "bases", [])]]
            if isinstance(node, FUNCS):
                todo += [(n, inner, stmt) for n in _kids(node.args)]
                todo += [(node.returns, ctx, stmt)] if node.returns else []
            todo += [(n, inner, n) for n in node.body]
        else:
            todo = [(n, ctx, n if isinstance(n, ast.stmt) else stmt) for n in _kids(node)]
        push(reversed(todo))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__") and name != "_" \
        and name not in PUBLIC_UNDERSCORE


def _last(expr: ast.AST) -> str:
    expr = expr.func if isinstance(expr, ast.Call) else expr
    return getattr(expr, "attr", getattr(expr, "id", "?"))


class Tree:
    """The parsed package: modules, import edges, name resolution."""

    def __init__(self, src: Path, pyproject: Path | None = None) -> None:
        pkg, pyproject = src / PACKAGE, pyproject or src.parent / "pyproject.toml"
        self.project = tomllib.loads(pyproject.read_text()) if pyproject.exists() else {}
        self.modules: dict[str, Module] = {}
        for path in sorted(pkg.rglob("*.py")):
            parts = [PACKAGE, *path.relative_to(pkg).with_suffix("").parts]
            if is_package := parts[-1] == "__init__":
                parts.pop()
            text = path.read_text(encoding="utf-8")
            self.modules[".".join(parts)] = Module(
                ".".join(parts), path.relative_to(pkg).as_posix(), ast.parse(text, str(path)),
                len(text.splitlines()), is_package)
        self.edges: list[tuple[str, str, str, bool, bool]] = []  # from to where local tc
        self.dynamic: list[tuple[str, str, str]] = []
        self.defs = {m.name: {n.name: n for n in m.tree.body if isinstance(
            n, ast.ClassDef | FUNCS)} for m in self.modules.values()}
        self.globals = {m.name: {t.id for n in m.tree.body if isinstance(n, ast.Assign)
                                 for t in n.targets if isinstance(t, ast.Name)}
                        for m in self.modules.values()}
        self._privates: dict[int, set[str]] = {}
        for mod in self.modules.values():
            _walk(mod)
            self._imports(mod)

    def base(self, mod: Module, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = mod.name.split(".")[: len(mod.name.split(".")) - (not mod.is_package)]
        package = package[: len(package) - node.level + 1]
        return ".".join([*package, node.module] if node.module else package)

    def _imports(self, mod: Module) -> None:
        dynamic = False
        for node, ctx, _ in mod.nodes:
            targets = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    mod.binds[alias.asname or top] = alias.name if alias.asname else top
                    targets.append(alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = self.base(mod, node)
                for alias in node.names:
                    mod.binds[alias.asname or alias.name] = full = f"{base}.{alias.name}"
                    targets.append(full if full in self.modules else base)
            elif isinstance(node, ast.Attribute) and node.attr == "import_module":
                dynamic = True
            for target in targets:
                while target not in self.modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in self.modules and target != mod.name:
                    self.edges.append((mod.name, target, f"{mod.rel}:{node.lineno}",
                                       ctx.func is not None, ctx.tc))
        self.dynamic += [(mod.name, n.value, f"{mod.rel}:{n.lineno}") for n, _, _ in mod.nodes
                         if dynamic and isinstance(n, ast.Constant) and n.value in self.modules]

    def dotted(self, mod: Module, expr: ast.AST | None) -> str | None:
        parts: list[str] = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        if expr.id in mod.binds:
            base = mod.binds[expr.id]
        elif expr.id in self.defs[mod.name] or expr.id in self.globals[mod.name]:
            base = f"{mod.name}.{expr.id}"
        elif expr.id in ("open", "str", "repr"):
            base = expr.id
        else:
            return None
        return ".".join([base, *reversed(parts)])

    def symbol(self, dotted: str | None) -> tuple[Module, ast.AST] | None:
        """The definition a dotted name refers to, through re-exports."""
        for _ in range(6):
            if not dotted or "." not in dotted:
                return None
            owner, name = dotted.rsplit(".", 1)
            if owner not in self.modules:
                return None
            if name in self.defs[owner]:
                return self.modules[owner], self.defs[owner][name]
            dotted = self.modules[owner].binds.get(name)
        return None

    def classes(self, mod: Module, expr: ast.AST | None) -> list[tuple[Module, ast.ClassDef]]:
        """The virtnet classes an annotation (or a called name) names."""
        found, stack = [], [expr]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                try:
                    stack.append(ast.parse(node.value, mode="eval").body)
                except SyntaxError:
                    pass
            elif isinstance(node, ast.BinOp | ast.Subscript | ast.Tuple):
                stack += [getattr(node, f) for f in ("left", "right", "slice") if hasattr(
                    node, f)] + getattr(node, "elts", [])
            elif isinstance(node, ast.Name | ast.Attribute):
                hit = self.symbol(self.dotted(mod, node))
                if hit and isinstance(hit[1], ast.ClassDef):
                    found.append(hit)
        return found  # type: ignore[return-value]

    def privates(self, mod: Module, cls: ast.ClassDef, depth: int = 0) -> set[str]:
        """Private names a class (and its virtnet bases) defines or assigns."""
        if id(cls) not in self._privates:
            names = {n.name for n in ast.walk(cls) if isinstance(n, ast.ClassDef | FUNCS)}
            names |= {getattr(n, "attr", getattr(n, "id", "")) for n in ast.walk(cls)
                      if isinstance(getattr(n, "ctx", None), ast.Store)}
            for b in cls.bases:
                for bmod, bcls in self.classes(mod, b) if depth < 5 else []:
                    names |= self.privates(bmod, bcls, depth + 1)
            self._privates[id(cls)] = {n for n in names if _private(n)}
        return self._privates[id(cls)]

    def text(self, mod: Module, expr: ast.AST | None) -> str | None:
        """A path's text: a constant, an f-string's head, Path(text), text / x, a module
        constant."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        if isinstance(expr, ast.JoinedStr) and expr.values:
            return self.text(mod, expr.values[0])
        if isinstance(expr, ast.Call) and expr.args and _last(expr) == "Path":
            return self.text(mod, expr.args[0])
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div):
            return self.text(mod, expr.left)
        if isinstance(expr, ast.Name):
            for node in mod.tree.body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == expr.id
                                                        for t in node.targets):
                    return self.text(mod, node.value)
        return None

    @cached_property
    def mode_constants(self) -> dict[str, set[str]]:
        """Module-level names bound to ForwardMode members ("NAT") or to strings ("'x")."""
        out: dict[str, set[str]] = {}
        for mod in self.modules.values():
            for node in mod.tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                        node.targets[0], ast.Name):
                    members = self.members(mod, node.value, {})
                    out[f"{mod.name}.{node.targets[0].id}"] = members or {
                        f"'{e.value}" for e in ast.walk(node.value)
                        if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        return out

    def members(self, mod: Module, expr: ast.AST, consts: dict[str, set[str]]) -> set[str]:
        found: set[str] = set()
        for node in ast.walk(expr):
            name = self.dotted(mod, node) or ""
            if isinstance(node, ast.Attribute) and node.attr in MODE_GROUPS and name.endswith(
                    f"ForwardMode.{node.attr}"):
                found.add(node.attr)
            found |= {m for m in consts.get(name, ()) if m[0] != "'"}
        return found

    def external_base(self, mod: Module, base: ast.expr) -> bool:
        name = self.dotted(mod, base)
        if name is None:
            return isinstance(base, ast.Attribute) or getattr(base, "id", "") not in INERT_BASES
        return not name.startswith(PACKAGE + ".") and name.split(".")[-1] not in INERT_BASES


def _tarjan(nodes: list[str], graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            strong(v)
    return sorted(out, key=lambda c: (-len(c), c))


def _short(name: str) -> str:
    return name.removeprefix(PACKAGE + ".").replace(".", "/")


def _cycles(t: Tree, unit: bool, dynamic: bool = False
            ) -> tuple[list[str], list[list[str]], list[str]]:
    """Strongly connected components of the import graph, and the edges inside them."""
    key = (lambda m: t.modules[m].unit) if unit else _short
    edges = [(a, b, w) for a, b, w, _, tc in t.edges if not tc] + (t.dynamic if dynamic else [])
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        if key(a) != key(b):
            graph.setdefault(key(a), set()).add(key(b))
    sccs = _tarjan(sorted({key(m) for m in t.modules}), graph)
    comp = {n: i for i, c in enumerate(sccs) for n in c}
    inside = [w for a, b, w in edges if key(a) != key(b) and comp.get(key(a), -1) ==
              comp.get(key(b))]
    return ["{" + ", ".join(c) + "}" for c in sccs], sccs, inside


def m_cycles(t: Tree) -> dict:
    units, _, inside = _cycles(t, True)
    modules, sccs, edges = _cycles(t, False)
    return {"a_units": (units, {"edges_inside": len(inside)}),
            "a_modules": (modules, {"modules_in_cycles": sum(map(len, sccs)),
                                    "edges_inside": edges}),
            "a_dynamic_units": _cycles(t, True, dynamic=True)[0]}


def _is_self(expr: ast.AST, ctx: Ctx) -> bool:
    return isinstance(expr, ast.Name) and expr.id in ("self", "cls") and ctx.func is not None \
        and bool(ctx.func.args.args) and ctx.func.args.args[0].arg == expr.id


def _held(t: Tree, mod: Module) -> dict[tuple[int, str], list]:
    """(scope, name or 'self.attr') -> the classes of other modules it is known to hold: from
    annotations, from a call of the class, from a parameter; two different kinds -> none."""
    held: dict[tuple[int, str], list] = {}
    for node, ctx, _ in mod.nodes:
        if isinstance(node, ast.arg) and node.annotation is not None:
            held[(id(ctx.func), node.arg)] = t.classes(mod, node.annotation)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            value = node.value
            kinds = t.classes(mod, getattr(node, "annotation", None)) or (
                t.classes(mod, value.func) if isinstance(value, ast.Call) else held.get(
                    (id(ctx.func), value.id), []) if isinstance(value, ast.Name) else [])
            for target in getattr(node, "targets", [getattr(node, "target", None)]):
                if isinstance(target, ast.Name):
                    key = (id(ctx.func or ctx.cls), target.id)
                elif isinstance(target, ast.Attribute) and _is_self(target.value, ctx):
                    key = (id(ctx.cls), "self." + target.attr)
                else:
                    continue
                held[key] = kinds if held.get(key, kinds) == kinds else []
    return held


def m_private(t: Tree) -> dict:
    out = []
    for mod in t.modules.values():
        held = _held(t, mod)
        for node, ctx, _ in mod.nodes:
            if isinstance(node, ast.ImportFrom) and (base := t.base(mod, node)).startswith(
                    PACKAGE) and base != mod.name:
                out += [f"{mod.rel}:{node.lineno} from {_short(base)} import {a.name}"
                        for a in node.names if _private(a.name) and f"{base}.{a.name}"
                        not in t.modules]
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            owner, value = t.dotted(mod, node.value), node.value
            if owner in t.modules and owner != mod.name:
                out.append(f"{mod.rel}:{node.lineno} {_short(owner)}.{node.attr}")
                continue
            kinds = [h for b in ctx.cls.bases for h in t.classes(mod, b)] if _is_self(
                value, ctx) and ctx.cls else held.get((id(ctx.func), value.id), []) if \
                isinstance(value, ast.Name) else held.get((id(ctx.cls), "self." + value.attr),
                                                          []) if isinstance(
                value, ast.Attribute) and _is_self(value.value, ctx) else []
            kinds = [(m, c) for m, c in kinds if m is not mod and node.attr in t.privates(m, c)]
            if kinds:
                out.append(f"{mod.rel}:{node.lineno} {kinds[0][1].name}.{node.attr}")
    return {"b_private": (out, {"by_file": _tally(out)})}


def m_local_imports(t: Tree) -> dict:
    kinds: dict[str, list[str]] = {"virtnet": [], "stdlib": [], "third-party": []}
    every = []
    for mod in t.modules.values():
        for node, ctx, _ in mod.nodes:
            if isinstance(node, ast.Import | ast.ImportFrom) and ctx.func and not ctx.tc:
                name = node.names[0].name if isinstance(node, ast.Import) else t.base(mod, node)
                top = name.split(".")[0]
                every.append(f"{mod.rel}:{node.lineno} {name}")
                kinds["virtnet" if top == PACKAGE else "stdlib" if top in sys.stdlib_module_names
                      else "third-party"].append(every[-1])
    inside = set(_cycles(t, False)[2])
    return {"c_local_imports": (every, {
        **{k: len(v) for k, v in kinds.items()}, "by_file": _tally(every),
        "closing_cycles": sum(1 for *_, w, local, _ in t.edges if local and w in inside)})}


def m_sizes(t: Tree) -> dict:
    big = sorted((m for m in t.modules.values() if m.lines > MODULE_LIMIT), key=lambda m: -m.lines)
    classes = sorted(((n.end_lineno - n.lineno + 1, f"{m.rel}:{n.lineno} {n.name}") for m in
                      t.modules.values() for n, _, _ in m.nodes if isinstance(n, ast.ClassDef)),
                     reverse=True)
    return {"d_modules": [f"{m.rel} {m.lines}" for m in big],
            "d_classes": [f"{w} {size}" for size, w in classes if size > CLASS_LIMIT]}


def _under(path: str | None, roots: tuple[str, ...]) -> bool:
    return path is not None and any(path == r or path.startswith(r + "/") for r in roots)


def _effect(t: Tree, mod: Module, call: ast.Call, name: str, ctx: Ctx) -> str | None:
    head, _, rest = name.partition(".")
    if rest in EFFECT_CALLS.get(head, ()):
        return name
    if name in ("os.open", "open") and call.args:
        path, arg = t.text(mod, call.args[0]), ast.unparse(call.args[0])
        flags = ast.unparse(call.args[1]) if len(call.args) > 1 else ""
        writes = re.search(r"O_WRONLY|O_RDWR|^'[^']*[wax+]", flags) or any(
            k.arg == "mode" for k in call.keywords)
        if name == "os.open" and (_under(path, ("/dev",)) or DEVICE_WORDS.search(
                f"{arg} {getattr(ctx.func, 'name', '')}".lower())):
            return f"os.open {path or arg}"
        if _under(path, ("/proc", "/sys")) and writes:
            return f"{name} {path} (write)"
    target = t.text(mod, getattr(call.func, "value", None))
    if _last(call) in ("write_text", "write_bytes") and _under(target, ("/proc", "/sys")):
        return f"write {target}"
    if _last(call) in LIBC_CALLS and isinstance(call.func, ast.Attribute) and \
            "ctypes" in mod.binds.values():
        return f"libc.{call.func.attr}"
    return None


def _data_class(node: ast.AST) -> bool:
    bases = {_last(b) for b in getattr(node, "bases", [])}
    return any(_last(d) == "dataclass" for d in getattr(node, "decorator_list", [])) or bool(
        bases & INERT_BASES - {"object", "Generic"}) or getattr(node, "name", "").endswith(
        ("Error", "Failure", "Exception"))


def m_effects(t: Tree) -> dict:
    found: dict[str, list[str]] = {"e_effects": [], "e2_around_host": [], "e3_proc_sys_reads": []}
    for mod in (m for m in t.modules.values() if not m.under("host")):
        for node, ctx, _ in mod.nodes:
            if not isinstance(node, ast.Call):
                continue
            name, at = t.dotted(mod, node.func) or "", f"{mod.rel}:{node.lineno}"
            if what := _effect(t, mod, node, name, ctx):
                found["e_effects"].append(f"{at} {what}")
            elif not name.endswith("Path") and any(_under(t.text(mod, e), ("/proc", "/sys"))
                                                   for e in [*node.args[:1], getattr(
                                                       node.func, "value", None)]):
                found["e3_proc_sys_reads"].append(f"{at} {ast.unparse(node)[:60]}")
            hit = t.symbol(name) if name.startswith(f"{PACKAGE}.host") else None
            if hit and hit[0].under("host") and isinstance(hit[1], ast.ClassDef | FUNCS) and \
                    not _data_class(hit[1]) and hit[1].name != "Host":
                found["e2_around_host"].append(f"{at} {_short(hit[0].name)}.{hit[1].name}")
            elif isinstance(node.func, ast.Attribute) and isinstance(
                    node.func.value, ast.Attribute) and node.func.value.attr in (
                    "netlink", "nftables"):
                found["e2_around_host"].append(f"{at} .{node.func.value.attr}.{node.func.attr}")
    return {k: (v, {"by_file": _tally(v)}) for k, v in found.items()}


def _unreached(t: Tree) -> list[tuple[Module, ast.AST, Ctx]]:
    refs: dict[str, list[Ctx]] = {}
    for mod in t.modules.values():
        docs = {id(n.body[0].value) for n in [mod.tree, *(x for x, _, _ in mod.nodes)]
                if isinstance(n, ast.Module | ast.ClassDef | FUNCS) and n.body
                and isinstance(n.body[0], ast.Expr)}
        for node, ctx, _ in mod.nodes:
            if isinstance(node, ast.Name | ast.Attribute | ast.alias):
                found = [getattr(node, "id", getattr(node, "attr", None))] if not isinstance(
                    node, ast.alias) else node.name.split(".")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(
                    node) not in docs and re.fullmatch(r"[\w.:]+", node.value):
                found = re.split(r"[.:]", node.value)
            else:
                continue
            for name in found:
                refs.setdefault(name, []).append(ctx)
    entry = {v.split(":")[-1] for v in t.project.get("project", {}).get("scripts", {}).values()}
    candidates = [(m, n, c) for m in t.modules.values() if not m.under("testing")
                  for n, c, _ in m.nodes if isinstance(n, FUNCS) and n.name not in entry
                  and not (n.name.startswith("__") and n.name.endswith("__"))
                  and all(_last(d) in PURE_DECORATORS for d in n.decorator_list)
                  and not (c.scope and isinstance(c.scope[-1], ast.ClassDef) and any(
                      t.external_base(m, b) for b in c.scope[-1].bases))]
    dead: set[int] = set()
    while True:  # a reference from inside an unreached function or a namesake does not count
        new = {id(n) for _, n, _ in candidates if id(n) not in dead and all(
            any(id(f) in dead or f.name == n.name for f in r.funcs) for r in refs.get(n.name, ()))}
        if not new:
            return [(m, n, c) for m, n, c in candidates if id(n) in dead]
        dead |= new


def _requirements(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0].lower().replace("-", "_") for s in specs}


def m_reach(t: Tree) -> dict:
    """(h), and (f)/(g) from the imports that run (unreached functions' do not count for f)."""
    dead = _unreached(t)
    skip = {id(n) for _, n, _ in dead}
    project = t.project.get("project", {})
    declared = _requirements(project.get("dependencies", []))
    extras = set().union(*map(_requirements, project.get("optional-dependencies", {}).values()))
    used, tests = set(), []
    for m in t.modules.values():
        for n, c, _ in m.nodes:
            if not isinstance(n, ast.Import | ast.ImportFrom) or c.tc:
                continue
            for top in ([a.name.split(".")[0] for a in n.names] if isinstance(n, ast.Import)
                        else [] if n.level else [(n.module or "").split(".")[0]]):
                used |= set() if c.func and id(c.func) in skip else {top.lower()}
                tests += [f"{m.rel}:{n.lineno} {top}"] if top.lower() in extras - declared else []
    return {"h_unreached": [f"{m.rel}:{n.lineno} {c.qual}.{n.name}".replace("<module>.", "")
                            for m, n, c in dead],  # type: ignore[attr-defined]
            "f_unused_deps": sorted(declared - used),
            "g_test_imports": (sorted({s.split(":")[0] for s in tests}), {"sites": tests})}


def _message(expr: ast.AST, handlers: set[str]) -> bool:
    return any((isinstance(n, ast.Call) and _last(n) in ("str", "repr") and n.args and
                getattr(n.args[0], "id", None) in handlers) or
               (isinstance(n, ast.Attribute) and (n.attr == "stderr" or n.attr in MESSAGE_ATTRS
                                                  and getattr(n.value, "id", None) in handlers))
               for n in ast.walk(expr))


def _text_decision(node: ast.AST, handlers: set[str]) -> bool:
    if isinstance(node, ast.Compare):
        return all(isinstance(o, ast.In | ast.NotIn | ast.Eq | ast.NotEq) for o in node.ops) \
            and any(_message(e, handlers) for e in [node.left, *node.comparators])
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
        node.func.attr in TEXT_METHODS and _message(node.func.value, handlers)
        or node.func.attr in REGEX_METHODS and any(_message(a, handlers) for a in node.args))


def _reversed(expr: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and (_last(n) == "reversed" or _last(n) == "sorted" and any(
        k.arg == "reverse" for k in n.keywords) or _last(n) == "range" and len(n.args) == 3
        and isinstance(n.args[2], ast.UnaryOp)) or isinstance(n, ast.Slice) and isinstance(
            n.step, ast.UnaryOp) for n in ast.walk(expr))


def _reverse_undo(node: ast.AST, func: ast.AST) -> bool:
    if isinstance(node, ast.For) and _reversed(node.iter):
        return bool(UNDO_WORDS.search(func.name) or any(  # type: ignore[attr-defined]
            UNDO_WORDS.search(_last(c)) for b in node.body for c in ast.walk(b)
            if isinstance(c, ast.Call)))
    return isinstance(node, ast.Call) and bool(UNDO_WORDS.search(_last(node))) and any(
        _reversed(a) for a in node.args)


def _journal(t: Tree, mod: Module, cls: ast.ClassDef, depth: int = 0) -> bool:
    if cls.name == "AppendedLines" or any(_last(b) == "Protocol" for b in cls.bases):
        return depth > 0
    return "Journal" in cls.name or depth < 5 and any(
        _journal(t, m, c, depth + 1) for b in cls.bases for m, c in t.classes(mod, b))


def _tested(node: ast.AST) -> list[ast.AST]:
    """The operands a node tests a value against: comparisons, match cases, dict keys."""
    if isinstance(node, ast.Compare):
        return [node.left, *node.comparators]
    if isinstance(node, ast.MatchValue):
        return [node.value]
    return [k for k in node.keys if k] if isinstance(node, ast.Dict) else []


def m_decisions(t: Tree) -> dict:
    """(i), (j), (k), (l) in one pass."""
    texts, journals, loops, op_tests = [], [], [], []
    modes: dict[str, set[str]] = {}
    ops: dict[str, set[str]] = {}
    consts = t.mode_constants
    for mod in t.modules.values():
        handlers = {n.name for n, _, _ in mod.nodes if isinstance(n, ast.ExceptHandler) and n.name}
        seen: set[int] = set()
        no_modes = mod.under("drivers") or mod.under("xml") or mod.under("model")
        for node, ctx, stmt in mod.nodes:
            if not isinstance(node, ast.Compare | ast.Call | ast.Attribute | ast.MatchValue |
                              ast.Dict | ast.ClassDef | ast.For):
                continue
            if _text_decision(node, handlers) and id(stmt) not in seen:
                seen.add(id(stmt))
                texts.append(f"{mod.rel}:{node.lineno} {ctx.qual}")
            exprs = _tested(node)
            groups = set() if no_modes else {
                MODE_GROUPS[m] for e in exprs for m in t.members(mod, e, consts)} | (
                {MODE_GROUPS[node.attr]} if isinstance(node, ast.Attribute) and node.attr in (
                    "has_own_bridge", "uses_macvtap") else set())
            if groups:
                modes.setdefault(ctx.where(mod, node), set()).update(groups)
            if isinstance(node, ast.Compare) and any(getattr(e, "attr", "") == "op" for e in exprs):
                values = {v.value for e in exprs for v in ast.walk(e) if isinstance(
                    v, ast.Constant) and isinstance(v.value, str)} | {
                    s[1:] for e in exprs for s in consts.get(t.dotted(mod, e) or "", ())
                    if s[0] == "'"}
                if values:
                    op_tests.append(f"{mod.rel}:{node.lineno}")
                    ops.setdefault(ctx.where(mod, node), set()).update(values)
            if isinstance(node, ast.ClassDef) and _journal(t, mod, node):
                journals.append(f"{mod.rel}:{node.lineno} {node.name}")
            if ctx.func and _reverse_undo(node, ctx.func) and ctx.where(mod, node) not in loops:
                loops.append(ctx.where(mod, node))
    return {"i_message_text": texts, "j_mode_family": [w for w, g in modes.items() if len(g) > 1],
            "j2_mode_tests": list(modes), "k_journals": journals, "k_undo_loops": loops,
            "l_op_dispatch": [w for w, v in ops.items() if len(v) > 1], "l2_op_tests": op_tests}


TITLES = {
    "a_units": "import cycles between units (top-level modules, subpackages)",
    "a_modules": "import cycles between modules",
    "a_dynamic_units": "unit cycles counting importlib.import_module names too",
    "b_private": "uses of other modules' private names",
    "c_local_imports": "function-local imports",
    "d_modules": f"modules over {MODULE_LIMIT} lines",
    "d_classes": f"classes over {CLASS_LIMIT} lines",
    "e_effects": "effect calls outside host/",
    "e2_around_host": "host/ functions called around the Host handle",
    "e3_proc_sys_reads": "other calls on /proc and /sys paths outside host/",
    "f_unused_deps": "declared dependencies not imported outside unreached functions",
    "g_test_imports": "modules of the package importing test-only extras",
    "h_unreached": "functions nothing in src reaches (by name)",
    "i_message_text": "decisions made on error message text",
    "j_mode_family": "functions outside drivers/ deciding the forward-mode family",
    "j2_mode_tests": "functions outside drivers/ testing the forward mode at all",
    "k_journals": "journal classes (write-ahead line files)",
    "k_undo_loops": "functions with a reverse-undo loop",
    "l_op_dispatch": "functions comparing .op with two strings or more",
    "l2_op_tests": "comparisons of .op with strings",
    "m_layers": "imports against the allowed direction between folders (architecture.md section 4)",
}


def _tally(offenders: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in offenders:
        counts[o.split(":")[0]] = counts.get(o.split(":")[0], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# (m) the line in the folders (architecture.md section 4): which units a unit may import.
# The bottom (errors, ids, facts, paths) is open to every unit; a unit always reaches itself.
BOTTOM = {"errors", "ids", "facts", "paths", "(package)"}
LAYERS: dict[str, set[str]] = {
    "face/": {"service/", "insight/", "store/", "plan/", "render/", "spec/", "execute/",
              "host/", "client", "daemon/"},
    "daemon/": {"service/", "insight/", "store/", "plan/", "spec/", "host/", "face/", "client"},
    "client": {"host/"},
    "insight/": {"service/", "store/", "plan/", "render/", "spec/", "host/"},
    "service/": {"store/", "plan/", "execute/", "host/", "spec/", "render/"},
    "execute/": {"plan/", "host/"},
    "store/": {"spec/", "host/", "execute/"},
    "plan/": {"render/", "spec/", "execute/"},
    "render/": {"spec/"},
    "spec/": set(),
    "host/": set(),
    "errors": set(), "ids": {"errors"}, "facts": {"errors"}, "paths": {"errors", "ids"},
    "(package)": set(),
}
NEVER = {("daemon/", "virtnet.face.cli")}  # the daemon calls the verbs, never the click CLI


def m_layers(t: Tree) -> dict:
    found = []
    for a, b, where, _, tc in t.edges:
        if tc or a not in t.modules or b not in t.modules:
            continue
        ua, ub = t.modules[a].unit, t.modules[b].unit
        allowed = LAYERS.get(ua)
        if ua == ub or allowed is None:
            continue
        bottom = set() if ua in BOTTOM else BOTTOM
        if (ub not in allowed and ub not in bottom) or (ua, b) in NEVER:
            found.append(f"{where} {ua.rstrip('/')} -> {_short(b)}")
    return {"m_layers": sorted(set(found))}


def run(tree: Tree) -> dict[str, dict]:
    """Every measure: {key: {title, figure, offenders, ...}}, plus _summary."""
    got: dict = {}
    for part in (m_cycles, m_private, m_local_imports, m_sizes, m_effects, m_reach, m_decisions,
                 m_layers):
        got.update(part(tree))
    res: dict[str, dict] = {}
    for key, title in TITLES.items():
        offenders, info = got[key] if isinstance(got[key], tuple) else (got[key], {})
        res[key] = {"title": title, "figure": len(offenders), "offenders": offenders, **info}
    res["_summary"] = {"modules": len(tree.modules),
                       "lines": sum(m.lines for m in tree.modules.values())}
    return res


def report(res: dict[str, dict], limit: int = 12) -> str:
    lines = [f"src/{PACKAGE}: {res['_summary']['modules']} modules, "
             f"{res['_summary']['lines']} lines"]
    for key, m in res.items():
        if key.startswith("_"):
            continue
        extra = {k: v for k, v in m.items() if not isinstance(v, list | dict) and k not in (
            "title", "figure")}
        lines.append(f"\n({key}) {m['title']}: {m['figure']}" + (f" {extra}" if extra else ""))
        if m.get("by_file"):
            lines.append("  by file: " + ", ".join(f"{f} {n}" for f, n in m["by_file"].items()))
        shown = m["offenders"][:limit] if limit > 0 else m["offenders"]
        lines += [f"  {o}" for o in shown]
        if len(shown) < len(m["offenders"]):
            lines.append(f"  ... {len(m['offenders']) - len(shown)} more (--all)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.structure",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src",
                        help=f"the directory holding {PACKAGE}/ (default: this checkout's)")
    parser.add_argument("--json", action="store_true", help="every measure as JSON")
    parser.add_argument("--all", action="store_true", help="every offender, not the first 12")
    args = parser.parse_args(argv)
    res = run(Tree(args.src))
    print(json.dumps(res, indent=1) if args.json else report(res, 0 if args.all else 12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
