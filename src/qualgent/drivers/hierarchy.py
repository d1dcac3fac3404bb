"""Find elements the way Maestro does: in the screen's view hierarchy, with Maestro's selector rules.

Appium gives the hierarchy as XML (``GET /session/{id}/source``); each platform names things its own
way, so ``parse_source`` first turns it into ``Node``s with Maestro's attribute names:

- ``text``, ``hintText``, ``accessibilityText`` — what a ``text`` selector is matched against;
- ``resource-id`` — what an ``id`` selector is matched against (also the part after the last ``/``);
- ``bounds`` (x, y, width, height) and the states ``clickable``, ``enabled``, ``checked``,
  ``focused``, ``selected``.

``find`` then applies a ``Selector`` as Maestro's ``Filters.kt`` and Orchestra do: text and id are
regular expressions matched against the whole value (ignoring case, ``.`` matching new lines), or
equal to it; the plain filters are intersected and narrowed to the deepest matching nodes; the
relative ones (``below``, ``childOf``, …) come next; ``index`` picks the n-th match top to bottom,
otherwise clickable matches come first.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from qualgent.flows.model import Selector

Bounds = tuple[int, int, int, int]  # x, y, width, height
_ANDROID_BOUNDS = re.compile(r"\[(-?\d+),(-?\d+)\]\[(-?\d+),(-?\d+)\]")
_REGEX_FLAGS = re.IGNORECASE | re.DOTALL | re.MULTILINE
MAX_PATTERN_CHARS = 1000


@dataclass(eq=False, slots=True)
class Node:
    attributes: dict[str, str]
    bounds: Bounds | None = None
    children: list[Node] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False)
    clickable: bool = False
    enabled: bool | None = None
    checked: bool | None = None
    focused: bool | None = None
    selected: bool | None = None
    visible: bool = True

    @property
    def text(self) -> str | None:
        """What Maestro's copyTextFrom takes: the text, else the hint, else the accessibility text."""
        for key in ("text", "hintText", "accessibilityText"):
            value = self.attributes.get(key)
            if value:
                return value
        return None

    def center(self) -> tuple[int, int]:
        assert self.bounds is not None
        x, y, width, height = self.bounds
        return x + width // 2, y + height // 2

    def walk(self) -> Iterable[Node]:
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def describe(self) -> str:
        shown = self.attributes.get("text") or self.attributes.get("accessibilityText") or ""
        ident = self.attributes.get("resource-id") or ""
        parts = [
            f'"{shown}"' if shown else "",
            f"id {ident}" if ident else "",
            f"at {self.bounds}" if self.bounds else "",
        ]
        return " ".join(p for p in parts if p) or "an element"


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() == "true"


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def parse_source(xml: str, platform: str) -> Node:
    """The hierarchy of an Appium ``/source`` answer (UiAutomator2, XCUITest or the fake driver)."""
    root = ET.fromstring(xml)  # the XML comes from the device's own Appium server, not from users
    return _convert(root, _converter(root, platform.lower()), None)


def _converter(root: ET.Element, platform: str) -> Callable[[ET.Element], Node]:
    """The source's own shape decides (a device's driver, not its platform, writes it)."""
    if root.tag == "hierarchy" or _ANDROID_BOUNDS.fullmatch(root.attrib.get("bounds", "")):
        return _android
    first = next(iter(root), root)
    if root.tag.startswith("XCUIElementType") or first.tag.startswith("XCUIElementType"):
        return _ios
    return {"android": _android, "ios": _ios}.get(platform, _generic) if "bounds" in first.attrib else _generic


def _convert(element: ET.Element, convert: Callable[[ET.Element], Node], parent: Node | None) -> Node:
    node = convert(element)
    node.parent = parent
    if node.bounds is None and parent is not None:
        node.bounds = parent.bounds  # a hierarchy that gives no place for an element: where its parent is
    node.children = [_convert(child, convert, node) for child in element]
    return node


def _android(element: ET.Element) -> Node:
    # The hot path of every lookup on Android (a screen has hundreds of elements): unrolled on purpose.
    a = element.attrib
    attributes: dict[str, str] = {"class": a.get("class") or element.tag}
    value = a.get("text")
    if value:
        attributes["text"] = value
    value = a.get("hint")
    if value:
        attributes["hintText"] = value
    value = a.get("content-desc")
    if value:
        attributes["accessibilityText"] = value
    value = a.get("resource-id")
    if value:
        attributes["resource-id"] = value
    bounds = None
    raw = a.get("bounds")
    if raw and raw[0] == "[" and raw[-1] == "]":
        parts = raw[1:-1].replace("][", ",").split(",")
        if len(parts) == 4:
            try:
                x1, y1, x2, y2 = int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])
                bounds = (x1, y1, x2 - x1, y2 - y1)
            except ValueError:
                bounds = None
    enabled = a.get("enabled")
    checked = a.get("checked")
    focused = a.get("focused")
    selected = a.get("selected")
    return Node(
        attributes,
        bounds,
        [],
        None,
        a.get("clickable") == "true",
        None if enabled is None else enabled == "true",
        None if checked is None else checked == "true",
        None if focused is None else focused == "true",
        None if selected is None else selected == "true",
        a.get("displayed") != "false",
    )


def _ios(element: ET.Element) -> Node:
    get = element.attrib.get
    label, value, name = get("label", ""), get("value", ""), get("name", "")
    attributes = {
        # As Maestro's iOS driver: the value (a field's content) or the label is the text.
        "text": value or label,
        "hintText": get("placeholderValue", ""),
        "accessibilityText": label,
        "resource-id": name if name not in (label, value) else "",
        "class": get("type", element.tag),
    }
    x, y, width, height = (_int(get(key)) for key in ("x", "y", "width", "height"))
    bounds = (x, y, width, height) if None not in (x, y, width, height) else None
    return Node(
        {k: v for k, v in attributes.items() if v},
        bounds,  # type: ignore[arg-type]
        clickable=_flag(get("accessible")) or element.tag in ("XCUIElementTypeButton", "XCUIElementTypeCell"),
        enabled=_flag(get("enabled")),
        selected=_flag(get("selected")),
        focused=_flag(get("focused")) if get("focused") is not None else _flag(get("hasFocus")),
        visible=_flag(get("visible")) is not False,
    )


def _generic(element: ET.Element) -> Node:
    """Appium's fake driver (and any hierarchy using plain ``id``/``text``/``left``/``top`` names)."""
    get = element.attrib.get
    attributes = {
        "text": get("text", ""),
        "accessibilityText": get("content-desc", "") or get("label", ""),
        "resource-id": get("id", "") or get("resource-id", ""),
        "class": element.tag,
    }
    x, y, width, height = (_int(get(key)) for key in ("left", "top", "width", "height"))
    bounds = (x, y, width, height) if None not in (x, y, width, height) else None
    return Node(
        {k: v for k, v in attributes.items() if v},
        bounds,  # type: ignore[arg-type]
        clickable=_flag(get("clickable")) or "Button" in element.tag,
        enabled=_flag(get("enabled")),
        checked=_flag(get("checked")),
        focused=_flag(get("focused")),
        selected=_flag(get("selected")),
        visible=_flag(get("visible")) is not False,
    )


# --- matching --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _pattern(text: str) -> re.Pattern[str] | None:
    """The selector's regular expression; None when it is not one (Maestro then compares the text)."""
    if len(text) > MAX_PATTERN_CHARS:
        return None
    try:
        return re.compile(text, _REGEX_FLAGS)
    except re.error:
        return None


def text_matches(pattern: str, value: str) -> bool:
    """Maestro's rule: the whole value matches the regex, or equals it (also with new lines as spaces)."""
    regex = _pattern(pattern)
    for candidate in (value, value.replace("\n", " ")):
        if candidate == pattern or (regex is not None and regex.fullmatch(candidate)):
            return True
    return False


def _text_filter(pattern: str) -> Callable[[Node], bool]:
    def matches(node: Node) -> bool:
        return any(
            text_matches(pattern, node.attributes[key])
            for key in ("text", "hintText", "accessibilityText")
            if key in node.attributes
        )

    return matches


def _id_filter(pattern: str) -> Callable[[Node], bool]:
    regex = _pattern(pattern)

    def matches(node: Node) -> bool:
        value = node.attributes.get("resource-id")
        if not value:
            return False
        for candidate in (value, value.rsplit("/", 1)[-1]):
            if candidate == pattern or (regex is not None and regex.fullmatch(candidate)):
                return True
        return False

    return matches


def _basic(selector: Selector) -> list[Callable[[Node], bool]]:
    tests: list[Callable[[Node], bool]] = []
    if selector.text is not None:
        tests.append(_text_filter(selector.text))
    if selector.id is not None:
        tests.append(_id_filter(selector.id))
    if selector.width is not None or selector.height is not None:
        tolerance = selector.tolerance or 0

        def size(node: Node) -> bool:
            if node.bounds is None:
                return False
            _, _, width, height = node.bounds
            if selector.width is not None and abs(width - selector.width) > tolerance:
                return False
            return not (selector.height is not None and abs(height - selector.height) > tolerance)

        tests.append(size)
    for state in ("enabled", "checked", "focused", "selected"):
        wanted = getattr(selector, state)
        if wanted is not None:
            tests.append(_state(state, wanted))
    for trait in (selector.traits or "").split():
        tests.append(_trait(trait))
    return tests


def _state(name: str, wanted: bool) -> Callable[[Node], bool]:
    return lambda node: bool(getattr(node, name)) == wanted


def _trait(name: str) -> Callable[[Node], bool]:
    key = name.replace("-", "_").upper()
    if key == "TEXT":
        return lambda node: "text" in node.attributes
    if key == "SQUARE":
        return lambda node: (
            node.bounds is not None and node.bounds[3] > 0 and abs(1 - node.bounds[2] / node.bounds[3]) < 0.03
        )
    if key == "LONG_TEXT":
        return lambda node: len(node.attributes.get("text", "")) > 200
    return lambda node: False


def _deepest(nodes: list[Node], test: Callable[[Node], bool]) -> list[Node]:
    """Maestro's deepestMatchingElement: a match whose descendants also match gives way to them."""
    out: list[Node] = []
    seen: set[int] = set()

    def visit(node: Node) -> list[Node]:
        below = [found for child in node.children for found in visit(child)]
        if below:
            return below
        return [node] if test(node) else []

    for node in nodes:
        for found in visit(node):
            if id(found) not in seen:
                seen.add(id(found))
                out.append(found)
    return out


def _distance(a: Node, b: Node) -> float:
    ax, ay = a.center()
    bx, by = b.center()
    return float(((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5)


def _relative(candidates: list[Node], anchors: list[Node], predicate: Callable[[Bounds, Bounds], bool]) -> list[Node]:
    pairs = [
        (node, _distance(node, anchor))
        for node in candidates
        if node.bounds is not None
        for anchor in anchors
        if anchor.bounds is not None and predicate(node.bounds, anchor.bounds)
    ]
    pairs.sort(key=lambda pair: pair[1])
    out: list[Node] = []
    seen: set[int] = set()
    for node, _ in pairs:
        if id(node) not in seen:
            seen.add(id(node))
            out.append(node)
    return out


def find(root: Node, selector: Selector) -> list[Node]:
    """Every visible element matching ``selector``, the one Maestro would pick first."""
    scope = [root]
    if selector.child_of is not None:
        parents = find(root, selector.child_of)
        if not parents:
            return []
        scope = [parents[0]]
    tests = _basic(selector)
    if tests:
        matches = _deepest(scope, lambda node: node.visible and all(t(node) for t in tests))
    else:
        matches = [node for top in scope for node in top.walk() if node.visible]
    if selector.below is not None:
        matches = _relative(matches, find(root, selector.below), lambda n, a: n[1] > a[1])
    if selector.above is not None:
        matches = _relative(matches, find(root, selector.above), lambda n, a: n[1] < a[1])
    if selector.left_of is not None:
        matches = _relative(matches, find(root, selector.left_of), lambda n, a: n[0] < a[0])
    if selector.right_of is not None:
        matches = _relative(matches, find(root, selector.right_of), lambda n, a: n[0] > a[0])
    if selector.contains_child is not None:
        children = {id(node) for node in find(root, selector.contains_child)}
        matches = [node for node in matches if any(id(child) in children for child in node.children)]
    for descendant in selector.contains_descendants:
        inside = {id(node) for node in find(root, descendant)}
        matches = [node for node in matches if any(id(d) in inside for child in node.children for d in child.walk())]
    if selector.index is not None:
        ordered = sorted(matches, key=lambda n: (n.bounds[1], n.bounds[0]) if n.bounds else (1 << 31, 1 << 31))
        position = selector.index if selector.index >= 0 else len(ordered) + selector.index
        return [ordered[position]] if 0 <= position < len(ordered) else []
    # Stable: among clickable elements, and among the others, the hierarchy's order stays.
    return sorted(matches, key=lambda node: not node.clickable)
