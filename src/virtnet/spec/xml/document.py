"""The XML document itself, below the network model: the hardened reader both the parser and the
formatter read with, and the <metadata> element dumped as libvirt keeps and writes it.

The reader refuses anything that could make the XML library do work the document did not ask
for: DOCTYPE and entity declarations (entity bombs, external entities), documents larger than
``MAX_DOCUMENT_BYTES``, network access, and text that is not UTF-8. Every refusal is an
``XMLParseError`` naming the source and, where there is one, the line.

<metadata> is free XML that libvirt sanitizes when it parses it (only namespaced element
children, the first of each namespace) and serializes the way libxml2's xmlNodeDump does: the
parser keeps that text, and the formatter writes it back at its indentation.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

from lxml import etree

from virtnet.errors import XMLParseError

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024

Element = etree._Element

_ENCODING_DECL = re.compile(rb"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


# --- the hardened reader ----------------------------------------------------------------


def _make_parser() -> etree.XMLParser:
    # remove_blank_text mirrors libvirt, which parses with xmlKeepBlanksDefault(0): the same
    # libxml2 heuristics decide which whitespace-only text survives (it matters for <metadata>).
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=True,
        collect_ids=False,
    )


_PARSER = _make_parser()


def _check_utf8(data: bytes, source: str | None) -> None:
    match = _ENCODING_DECL.match(data[:200])
    if match and match.group(1).lower().decode() not in ("utf-8", "utf8", "us-ascii", "ascii"):
        raise XMLParseError(
            f"unsupported document encoding '{match.group(1).decode()}': only UTF-8 is accepted",
            source=source,
            line=1,
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise XMLParseError(
            f"invalid UTF-8 byte 0x{data[exc.start]:02x} at byte offset {exc.start}",
            source=source,
            line=line,
        ) from None


def _parse_document(data: bytes | str, source: str | None) -> Element:
    """Parse ``data`` into its root element with every dangerous feature refused."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise XMLParseError(
                f"text is not encodable as UTF-8 at character {exc.start}", source=source
            ) from None
    else:
        raw = bytes(data)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise XMLParseError(
            f"document too large: more than {MAX_DOCUMENT_BYTES} bytes "
            f"({MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB)",
            source=source,
        )
    if not raw.strip():
        raise XMLParseError("document is empty", source=source)
    _check_utf8(raw, source)
    # Refuse a DOCTYPE before libxml2 sees it: it is the only way to declare entities, and
    # network definitions never need one.
    doctype_at = raw.find(b"<!DOCTYPE")
    while doctype_at >= 0:
        if not _inside_comment_or_cdata(raw, doctype_at):
            raise XMLParseError(
                "DOCTYPE and entity declarations are not allowed",
                source=source,
                line=raw.count(b"\n", 0, doctype_at) + 1,
            )
        doctype_at = raw.find(b"<!DOCTYPE", doctype_at + 1)
    try:
        root = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno else None
        message = exc.msg or str(exc)
        # lxml appends ", line N, column M"; the line is reported separately.
        message = re.sub(r", line \d+, column \d+$", "", message)
        raise XMLParseError(f"malformed XML: {message}", source=source, line=line) from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XMLParseError(
            "DOCTYPE and entity declarations are not allowed", source=source, line=1
        )
    # Entity references survive only if declared somewhere; with no DTD there are none, but
    # check anyway so that no unexpanded reference ever reaches the model.
    for node in root.iter(etree.Entity):
        raise XMLParseError(
            f"entity reference '{node.text}' is not allowed",
            source=source,
            line=node.sourceline,
        )
    return root


def _inside_comment_or_cdata(raw: bytes, offset: int) -> bool:
    """True when ``offset`` lies inside a comment or CDATA section opened before it."""
    for opener, closer in ((b"<!--", b"-->"), (b"<![CDATA[", b"]]>")):
        start = raw.rfind(opener, 0, offset)
        if start >= 0 and raw.find(closer, start + len(opener), offset) < 0:
            return True
    return False


def parse_fragment(text: str, source: str) -> Element:
    """Parse one XML element (e.g. a net-update snippet) with the same hardening as a whole
    document. Returns the lxml element."""
    return _parse_document(text, source)


def parse_document(data: bytes | str, source: str | None) -> Element:
    """Parse a whole definition's text into its root element, hardened as parse_network
    parses it (for passes over the tree itself, such as virtnet.spec.xml.schema's)."""
    return _parse_document(data, source)


# --- metadata ---------------------------------------------------------------------------

_DUMP_INDENT = "  "  # libxml2's indentation per level (xmlTreeIndentString)
_XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"


def _own_namespaces(el: etree._Element) -> list[tuple[str | None, str]]:
    """Namespace declarations made on ``el`` itself, in document order."""
    parent = el.getparent()
    inherited = parent.nsmap if parent is not None else {}
    return [(prefix, uri) for prefix, uri in el.nsmap.items() if inherited.get(prefix) != uri]


def _used_namespaces(el: etree._Element) -> list[tuple[str | None, str]]:
    """(prefix, uri) of the element's own name and of its namespaced attributes."""
    used: list[tuple[str | None, str]] = []
    qname = etree.QName(el)
    if qname.namespace is not None:
        used.append((el.prefix, qname.namespace))
    for key in el.attrib:
        attr = etree.QName(key)
        if attr.namespace is not None and attr.namespace != _XML_NAMESPACE:
            used.append((_attribute_prefix(el, attr.namespace), attr.namespace))
    return used


def _attribute_prefix(el: etree._Element, uri: str) -> str | None:
    for prefix, ns in el.nsmap.items():
        if ns == uri and prefix is not None:
            return prefix
    return None


def _metadata_namespaces(root: etree._Element) -> list[tuple[str | None, str]]:
    """The declarations libxml2's xmlCopyNode puts on a copied <metadata>: its own, then each
    namespace used inside but declared outside (e.g. on <network>), in copy order."""
    declared = list(_own_namespaces(root))
    seen_prefixes = {prefix for prefix, _ in declared}
    for el in root.iter(etree.Element):
        # prefixes declared between this element and the copied root (inclusive)
        local: set[str | None] = set()
        node: etree._Element | None = el
        while node is not None:
            local.update(prefix for prefix, _ in _own_namespaces(node))
            if node is root:
                break
            node = node.getparent()
        for prefix, uri in _used_namespaces(el):
            if prefix not in local and prefix not in seen_prefixes:
                declared.append((prefix, uri))
                seen_prefixes.add(prefix)
    return declared


def _sanitized_children(root: etree._Element) -> list[etree._Element]:
    """libvirt keeps only namespaced element children of <metadata>, one per namespace."""
    kept: list[etree._Element] = []
    seen: set[str] = set()
    for child in root:
        if not isinstance(child.tag, str):
            continue  # comments and processing instructions have no namespace
        namespace = etree.QName(child).namespace
        if namespace is None or namespace in seen:
            continue
        seen.add(namespace)
        kept.append(child)
    return kept


def _qualified_name(el: etree._Element) -> str:
    local = etree.QName(el).localname
    return f"{el.prefix}:{local}" if el.prefix else local


def _escape_text(text: str) -> str:
    # libxml2's content escaping: &, <, > and carriage return
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def _escape_attribute(text: str) -> str:
    # libxml2's attribute escaping; a copied node has no document encoding, so characters
    # beyond ASCII become hexadecimal character references
    out = []
    for char in text:
        code = ord(char)
        if char == "<":
            out.append("&lt;")
        elif char == ">":
            out.append("&gt;")
        elif char == "&":
            out.append("&amp;")
        elif char == '"':
            out.append("&quot;")
        elif char == "\n":
            out.append("&#10;")
        elif char == "\r":
            out.append("&#13;")
        elif char == "\t":
            out.append("&#9;")
        elif code >= 0x80:
            out.append(f"&#x{code:X};")
        else:
            out.append(char)
    return "".join(out)


def _dump_node(
    node: etree._Element,
    level: int,
    formatted: bool,
    out: list[str],
    namespaces: list[tuple[str | None, str]] | None = None,
    children: list[etree._Element] | None = None,
) -> None:
    """Serialize like libxml2's xmlNodeDump (format=1): children of an element are indented
    two spaces per level unless the element has text children, which switches formatting off
    for its whole subtree."""
    if isinstance(node, etree._Comment):
        out.append(f"<!--{node.text or ''}-->")
        return
    if isinstance(node, etree._ProcessingInstruction):
        out.append(f"<?{node.target}{' ' + node.text if node.text else ''}?>")
        return
    name = _qualified_name(node)
    out.append(f"<{name}")
    for prefix, uri in namespaces if namespaces is not None else _own_namespaces(node):
        attr = f"xmlns:{prefix}" if prefix else "xmlns"
        out.append(f' {attr}="{_escape_attribute(uri)}"')
    for key, value in node.attrib.items():
        qname = etree.QName(key)
        if qname.namespace == _XML_NAMESPACE:
            attr_name = f"xml:{qname.localname}"
        elif qname.namespace is not None:
            prefix = _attribute_prefix(node, qname.namespace)
            attr_name = f"{prefix}:{qname.localname}" if prefix else qname.localname
        else:
            attr_name = qname.localname
        out.append(f' {attr_name}="{_escape_attribute(value)}"')
    # the node list as libxml2 sees it: text, then each child followed by its tail text
    kids: list[etree._Element | str] = []
    if children is not None:
        kids.extend(children)
    else:
        if node.text:
            kids.append(node.text)
        for child in node:
            kids.append(child)
            if child.tail:
                kids.append(child.tail)
    if not kids:
        out.append("/>")
        return
    child_formatted = formatted and not any(isinstance(k, str) for k in kids)
    out.append(">")
    if child_formatted:
        out.append("\n")
    pad = _DUMP_INDENT * min(level + 1, 30)
    for kid in kids:
        if isinstance(kid, str):
            out.append(_escape_text(kid))
            continue
        if child_formatted:
            out.append(pad)
        _dump_node(kid, level + 1, child_formatted, out)
        if child_formatted:
            out.append("\n")
    if child_formatted:
        out.append(_DUMP_INDENT * min(level, 30))
    out.append(f"</{name}>")


def dump_metadata(metadata: etree._Element, level: int) -> str:
    """The <metadata> element as libvirt writes it at indentation ``level`` (without the
    leading indentation of its first line): sanitized as libvirt's parser keeps it, namespace
    declarations reconciled onto the element, then dumped like libxml2's xmlNodeDump."""
    out: list[str] = []
    _dump_node(metadata, level, True, out, namespaces=_metadata_namespaces(metadata),
               children=_sanitized_children(metadata))
    return "".join(out)


def dump_node(node: etree._Element, level: int = 0) -> str:
    """NODE as libxml2's xmlNodeDump writes it (format=1) at indentation LEVEL."""
    out: list[str] = []
    _dump_node(node, level, True, out)
    return "".join(out)


class XPathError(XMLParseError):
    """An XPath expression that is not valid, or does not select nodes."""


def select_nodes(text: str, expression: str, source: str, wrap: bool = False,
                 warn: Callable[[str], None] | None = None) -> str:
    """What virsh's ``--xpath EXPRESSION [--wrap]`` prints of the XML TEXT: each selected node
    dumped on a line of its own (an attribute as ` name="value"`), or with WRAP all of them
    as children (attributes: attributes) of one <nodes> element. Only expressions that select
    nodes are accepted, as virsh accepts them."""
    root = parse_document(text, source)
    if expression.strip() == "/":
        # the document node itself (lxml gives no node for it): its declaration, then the root
        document = f'<?xml version="1.0" encoding="UTF-8"?>\n{dump_node(root)}\n'
        return f"<nodes>\n{document}\n</nodes>\n" if wrap else f"{document}\n"
    try:
        found = root.getroottree().xpath(expression)
    except etree.XPathError as exc:
        # virsh selects nothing then (libxml2 reports the error and gives no node set)
        if warn is not None:
            warn(f"XPath expression '{expression}' is not valid: {exc}")
        found = []
    if not isinstance(found, list):  # a number, a string, a boolean: not nodes
        raise XPathError(f"Incorrect xpath '{expression}'", source=source)
    lines: list[str] = []
    wrapper = etree.Element("nodes")
    for node in found:
        if isinstance(node, etree._Element):
            lines.append(dump_node(node))
            copied = copy.deepcopy(node)
            copied.tail = None
            wrapper.append(copied)
        elif getattr(node, "is_attribute", False):
            name = str(node.attrname)
            lines.append(f' {name}="{_escape_attribute(str(node))}"')
            wrapper.set(name, str(node))  # the same name twice: the last one stays
        else:  # a text node
            lines.append(_escape_text(str(node)))
            if len(wrapper):
                wrapper[-1].tail = (wrapper[-1].tail or "") + str(node)
            else:
                wrapper.text = (wrapper.text or "") + str(node)
    if wrap:
        return dump_node(wrapper) + "\n"
    return "".join(line + "\n" for line in lines)


__all__ = ["MAX_DOCUMENT_BYTES", "Element", "XPathError", "dump_metadata", "dump_node",
           "parse_document", "parse_fragment", "select_nodes"]
