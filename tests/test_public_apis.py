"""The product uses only public names of the standard library and its dependencies (STYLE.md,
practice 15): a private name can change or vanish in any release, and code built on one misses
the library's fixes. Checked on the source of every product module (all but tests/ and bench/):

- no `from json.encoder import _make_iterencode`, `import urllib3._collections`, ...;
- no `._name` on anything but what Tollgate itself defines: `sock._sslobj`, `json.encoder._x`
  and `self._buffer` of an `http.client` subclass are out; `self._lock` of a Tollgate class is in;
- no class that overrides a private method of an outside base class (`_read_status`,
  `_send_output`, `_new_conn`): overriding public methods (`connect`, `getresponse`) is fine.
"""

from __future__ import annotations

import ast
import http.client
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOT_PRODUCT = ("tests", "bench")


def product_files() -> list[Path]:
    return sorted(
        path
        for path in REPO.rglob("*.py")
        if path.relative_to(REPO).parts[0] not in NOT_PRODUCT
        and not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(REPO).parts)
    )


def own_modules() -> set[str]:
    """Tollgate's top-level modules and packages: what an import may name privately."""
    return {path.relative_to(REPO).parts[0].removesuffix(".py") for path in product_files()}


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def body_names(node: ast.ClassDef) -> set[str]:
    """The names a class statement's body defines: its methods and the attributes it assigns."""
    names = set()
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(item.name)
        elif isinstance(item, ast.Assign | ast.AnnAssign):
            targets = item.targets if isinstance(item, ast.Assign) else [item.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names


def own_private_names(trees: list[ast.AST]) -> set[str]:
    """Every private name Tollgate defines: functions, classes, attributes assigned, slots."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__slots__" for t in node.targets):
                names |= {item.value for item in ast.walk(node.value) if isinstance(item, ast.Constant)}
    return {name for name in names if private(name)}


FILES = product_files()
TREES = {path: ast.parse(path.read_text(), str(path)) for path in FILES}
OWN = own_modules()
OWN_PRIVATE = own_private_names(list(TREES.values()))
CLASS_NAMES = {name for tree in TREES.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
               for name in body_names(node)}  # fmt: skip


def outside(module: str | None) -> bool:
    return module is not None and module.split(".")[0] not in OWN


def private_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and outside(node.module):
            if any(private(part) for part in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names if private(a.name)]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if outside(a.name) and any(private(part) for part in a.name.split("."))]  # fmt: skip
    return found


def foreign_private_attributes(tree: ast.AST) -> list[str]:
    return [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in OWN_PRIVATE
    ]


def module_name(path: Path) -> str | None:
    relative = path.relative_to(REPO).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    name = ".".join(parts)
    return name if all(part.isidentifier() for part in parts) else None  # gunicorn.conf.py is run, not imported


def private_overrides(path: Path, tree: ast.AST) -> list[str]:
    """Private names that a Tollgate class (or a mixin of its) defines and an outside class among
    its bases has already."""
    name = module_name(path)
    if name is None or name == "noxfile":
        return []  # noxfile imports nox, which only its runner has
    namespace = vars(importlib.import_module(name))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            found += [
                f"line {node.lineno}: {node.name}: {clash}"
                for clash in clashes(class_of(node, namespace, path), CLASS_NAMES)
            ]
    return found


def class_of(node: ast.ClassDef, namespace: dict, path: Path) -> type | None:
    """The class a `class` statement made: the module's own, or one like it for a class made in a
    function (its outside bases, with its body's names)."""
    made = namespace.get(node.name)
    if isinstance(made, type) and made.__qualname__ == node.name and made.__module__ == namespace["__name__"]:
        return made
    bases = []
    for base in node.bases:
        try:
            bases.append(eval(compile(ast.Expression(base), str(path), "eval"), dict(namespace)))
        except NameError:
            continue  # made in the same function from another such class: checked as that one
    body = dict.fromkeys(body_names(node))
    try:
        return type(node.name, tuple(bases), {**body, "__module__": namespace["__name__"]})
    except TypeError:
        return None  # bases that cannot be combined like this (a metaclass of their own): not checked


def clashes(made: type | None, written: set[str]) -> list[str]:
    """The names of `written` (what class bodies define in the source, not what a metaclass adds)
    that a class in `made`'s MRO defines and an outside class in it has already."""
    mro = getattr(made, "__mro__", ())
    own = [klass for klass in mro if not outside(klass.__module__) and klass.__module__ != "builtins"]
    foreign = [klass for klass in mro if klass not in own]
    return [
        f"{attr} overrides {klass.__module__}.{klass.__qualname__}.{attr}"
        for mine in own
        for attr in sorted(vars(mine))
        if private(attr) and attr in written
        for klass in foreign
        if attr in vars(klass)
    ]


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", FILES, ids=relative)
def test_no_product_module_uses_a_private_name_of_a_library(path):
    tree = TREES[path]
    assert private_imports(tree) == []
    assert foreign_private_attributes(tree) == []
    assert private_overrides(path, tree) == []


def test_the_check_sees_the_private_names_it_is_meant_to_refuse():
    one_write = type("OneWrite", (), {"__module__": "providers.http", "_send_output": lambda self: None})
    connection = type("Connection", (one_write, http.client.HTTPConnection), {"__module__": "providers.http"})
    assert clashes(connection, {"_send_output"}) == ["_send_output overrides http.client.HTTPConnection._send_output"]
    tree = ast.parse(
        "import json.encoder\n"
        "from urllib3._collections import HTTPHeaderDict\n"
        "from http.client import _MAXLINE\n"
        "iterencode = json.encoder._make_iterencode\n"
        "class Answer(http.client.HTTPResponse):\n"
        "    def begin(self):\n"
        "        self._read_status()\n"
    )
    assert private_imports(tree) == [
        "line 2: from urllib3._collections import ...",
        "line 3: from http.client import _MAXLINE",
    ]
    assert foreign_private_attributes(tree) == ["line 4: ._make_iterencode", "line 7: ._read_status"]
