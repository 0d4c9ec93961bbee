"""virtnetd: the resident engine.

The engine stays a library (:mod:`virtnet.service.engine`, :mod:`virtnet.service.ports`); the daemon only hosts
it: an HTTP/JSON API on a unix socket (:mod:`.server`), the CLI's verbs run in-process for thin
clients (virtnet.face.verbs), supervision of dnsmasq, leases and state changes (:mod:`.supervise`),
an event stream (:mod:`.events`) and systemd integration (:mod:`.systemd`).
"""
