"""The request half of net-update: its commands, sections and the update in progress.

``apply_update`` in ``virtnet.spec.update`` builds one ``PendingUpdate`` per call and hands it to
the handler of its section; the handlers live in ``update`` and ``update_dns``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from lxml import etree

from virtnet.errors import UpdateError, XMLParseError
from virtnet.spec.model import Network


class UpdateCommand(enum.Enum):
    """virsh net-update's commands; values are the names virsh accepts."""

    ADD_FIRST = "add-first"
    ADD_LAST = "add-last"
    DELETE = "delete"
    MODIFY = "modify"

    @property
    def is_add(self) -> bool:
        return self in (UpdateCommand.ADD_FIRST, UpdateCommand.ADD_LAST)


class UpdateSection(enum.Enum):
    """virsh net-update's sections; values are the names virsh accepts."""

    BRIDGE = "bridge"
    DOMAIN = "domain"
    IP = "ip"
    IP_DHCP_HOST = "ip-dhcp-host"
    IP_DHCP_RANGE = "ip-dhcp-range"
    FORWARD = "forward"
    FORWARD_INTERFACE = "forward-interface"
    FORWARD_PF = "forward-pf"
    PORTGROUP = "portgroup"
    DNS_HOST = "dns-host"
    DNS_TXT = "dns-txt"
    DNS_SRV = "dns-srv"


# virsh's "add" is add-last.
COMMAND_ALIASES = {"add": UpdateCommand.ADD_LAST}

# Sections libvirt 9.0 names but refuses to update.
UNSUPPORTED_SECTIONS = frozenset(
    {
        UpdateSection.BRIDGE,
        UpdateSection.DOMAIN,
        UpdateSection.IP,
        UpdateSection.FORWARD,
        UpdateSection.FORWARD_PF,
    }
)

# The element each updatable section's snippet must be.
SECTION_ELEMENT = {
    UpdateSection.IP_DHCP_HOST: "host",
    UpdateSection.IP_DHCP_RANGE: "range",
    UpdateSection.FORWARD_INTERFACE: "interface",
    UpdateSection.PORTGROUP: "portgroup",
    UpdateSection.DNS_HOST: "host",
    UpdateSection.DNS_TXT: "txt",
    UpdateSection.DNS_SRV: "srv",
}


class PendingUpdate:
    """One update in progress: the network copy being changed and the request."""

    def __init__(
        self,
        net: Network,
        command: UpdateCommand,
        section: UpdateSection,
        element: etree._Element,
    ) -> None:
        self.net = net
        self.command = command
        self.section = section
        self.element = element
        self.expected_element = SECTION_ELEMENT[section]

    def error(self, message: str) -> UpdateError:
        return UpdateError(f"{self.section.value}: {message} in network '{self.net.name}'")

    def check_element_name(self) -> None:
        tag = self.element.tag
        name = etree.QName(tag).localname if isinstance(tag, str) else str(tag)
        if name != self.expected_element:
            raise self.error(
                f"unexpected element <{name}>, expected <{self.expected_element}>"
            )

    def refuse_modify(self, what: str) -> None:
        if self.command is UpdateCommand.MODIFY:
            raise self.error(f"{what} cannot be modified, only added or deleted")

    def parse(self, parser: Callable[..., object], path: str, *args: object) -> object:
        """Run one of the definition parsers on the snippet, reporting its errors as refusals."""
        try:
            return parser(self.element, path, *args)
        except XMLParseError as exc:
            raise self.error(f"invalid {describe_element(self.element)}: {exc.message}") from None

    def insert_position(self, entries: list) -> int:
        return 0 if self.command is UpdateCommand.ADD_FIRST else len(entries)


def describe_element(element: etree._Element) -> str:
    """The snippet's start tag, attributes in document order, for messages."""
    attrs = "".join(f" {key}='{value}'" for key, value in element.attrib.items())
    name = etree.QName(element.tag).localname if isinstance(element.tag, str) else "?"
    return f"<{name}{attrs}>"
