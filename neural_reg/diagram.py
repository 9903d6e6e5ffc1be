"""The DataJoint diagram of the schemas, drawn to PNG or SVG (``neural-reg diagram``, the report's data-model section).

Needs graphviz's ``dot`` program (datajoint's Diagram renders through pydot, which calls it; pydot and networkx
come with datajoint).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.errors import NeuralRegError

FORMATS = ("png", "svg")
DOT_MISSING = ("graphviz's 'dot' program is not installed (datajoint's Diagram renders through pydot, which calls "
               "it). Install it (Debian/Ubuntu: apt-get install graphviz; conda: conda install graphviz; macOS: "
               "brew install graphviz)")
CAPTION = ("tables (green boxes manual, grey lookup, red ellipses computed, small boxes part tables) and their "
           "foreign keys (solid: in the child's primary key, bold: all of it, dashed: a secondary attribute), grouped "
           "by schema, upstream at the top.")


class DiagramError(NeuralRegError):
    """The diagram cannot be drawn (no ``dot``, an unknown format); the message says the fix."""


def schema_diagram(schema_modules=None):
    """dj.Diagram of every schema of ``schema_modules`` (default: all of ``schemas``, activated), tables named
    'module.Class' (e.g. oracle.OracleStats)."""
    import datajoint as dj

    import schemas

    modules = schema_modules if schema_modules is not None else schemas.modules()
    context = {module.__name__.split(".")[-1]: module for module in modules}  # names 'oracle.OracleStats'
    diagram = None
    for module in modules:
        d = dj.Diagram(module.schema, context=context)
        diagram = d if diagram is None else diagram + d
    if diagram is None:
        raise DiagramError("no schema to draw. Fix: give at least one schema module")
    return diagram


def render(diagram, fmt: str = "png", direction: str = "TB") -> bytes:
    """The diagram drawn as PNG or SVG bytes, laid out top to bottom ('TB') or left to right ('LR')."""
    if fmt not in FORMATS:
        raise DiagramError(f"cannot draw the diagram as {fmt!r}. Fix: choose one of {', '.join(FORMATS)}")
    if shutil.which("dot") is None:
        raise DiagramError(f"not drawn: {DOT_MISSING}")
    display = diagram._connection._config.display
    before, display.diagram_direction = display.diagram_direction, direction
    try:
        dot = diagram.make_dot()
        return dot.create_png() if fmt == "png" else dot.create_svg()
    finally:
        display.diagram_direction = before


def check_target(path) -> str:
    """The format ('png' or 'svg') of ``path``'s suffix, after checking that ``dot`` is there (no database)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise DiagramError(f"{path}: cannot tell the format from the suffix {path.suffix!r}. Fix: name the file "
                           "FILE.png or FILE.svg")
    if shutil.which("dot") is None:
        raise DiagramError(f"not drawn: {DOT_MISSING}")
    return fmt


def write(path, schema_modules=None, direction: str = "TB") -> Path:
    """Draw the schemas' diagram to ``path``; its suffix (.png or .svg) says the format. Returns the path."""
    path = Path(path)
    fmt = check_target(path)
    data = render(schema_diagram(schema_modules), fmt, direction)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
