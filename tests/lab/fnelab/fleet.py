"""Building a fleet: names, addresses, host ids, security/HTTPS spread, the test CA, and the files in DIR."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
from pathlib import Path

import yaml

from . import variants
from .state import Server, State

SERVER_PORT, BACKOFFICE_PORT, CONTROL_PORT = 7070, 8443, 7099
ELSEWHERE_OFFSET = 2   # the "elsewhere" host that `redirect` faults point to (base+2)
ELSEWHERE_PORTS = {"http": SERVER_PORT, "https": BACKOFFICE_PORT}


def name(index: int) -> str:
    return f"lls{index:03d}"


def address(base: str, offset: int) -> str:
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(base)) + offset))


def elsewhere(base: str) -> dict[str, str]:
    """The elsewhere host's address and its two base URLs."""
    host = address(base, ELSEWHERE_OFFSET)
    return {"address": host, **{scheme: f"{scheme}://{host}:{port}" for scheme, port in ELSEWHERE_PORTS.items()}}


def spread(n: int, fraction: float, at_least: int = 1) -> list[bool]:
    """n flags, about fraction of them true, evenly spaced. A fraction strictly between 0 and 1 gives at least
    `at_least` true and as many false (when n allows), so a mixed fleet is really mixed."""
    if n == 0:
        return []
    k = round(fraction * n)
    if 0 < fraction < 1 and n >= 2:
        floor = min(at_least, n // 2)
        k = min(max(k, floor), n - floor)
    return [((j + 1) * k) // n > (j * k) // n for j in range(n)]


def flags(n: int, security: float, https: float) -> list[tuple[bool, bool]]:
    """(security, https) per server. HTTPS is spread within the secured and the unsecured servers separately, and
    when both are fractions each group gets at least two servers (given four), so every combination occurs."""
    sec = spread(n, security, at_least=2 if 0 < https < 1 else 1)
    out: list[tuple[bool, bool]] = [(s, False) for s in sec]
    for group in (True, False):
        members = [i for i, s in enumerate(sec) if s == group]
        for i, h in zip(members, spread(len(members), https), strict=True):
            out[i] = (group, h)
    return out


def host_id(lab_id: str, index: int) -> str:
    return hashlib.sha256(f"{lab_id}:{index}".encode()).hexdigest()[:12].upper()


def create(state: State, n: int, base: str, security: float, https: float) -> None:
    lab_id = secrets.token_hex(8)
    state.put(lab_id=lab_id, address_base=base)
    state.add_servers(
        Server(i, name(i), address(base, 9 + i), host_id(lab_id, i), sec, tls, "admin",
               f"pw-{secrets.token_urlsafe(9)}")
        for i, (sec, tls) in enumerate(flags(n, security, https), start=1))


def ensure_tls(state: State, directory: Path) -> None:
    """One trustme CA for the lab (kept in the database so a restart keeps it), one server certificate whose
    IP SANs cover every server, the back office and the elsewhere host. Writes DIR/ca.pem."""
    if state.get("ca_pem") is None:
        import trustme

        ca = trustme.CA(organization_name="fnelab test CA")
        base = state.get("address_base")
        ips = [address(base, 1), address(base, ELSEWHERE_OFFSET)] + [s.address for s in state.servers()]
        leaf = ca.issue_cert(*ips, "localhost")
        state.put(ca_pem=ca.cert_pem.bytes().decode(), cert_chain_pem=b"".join(
            b.bytes() for b in leaf.cert_chain_pems).decode(), key_pem=leaf.private_key_pem.bytes().decode())
    (directory / "ca.pem").write_text(state.get("ca_pem"))
    (directory / "ca.pem").chmod(0o644)  # a certificate, no secret
    # The same CA as a Java truststore (the stand-in tools are Java: they trust a truststore, not ca.pem)
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12

    cert = x509.load_pem_x509_certificate(state.get("ca_pem").encode())
    store = pkcs12.serialize_java_truststore([pkcs12.PKCS12Certificate(cert, b"fnelab-ca")], NoEncryption())
    (directory / "truststore.p12").write_bytes(store)
    (directory / "truststore.p12").chmod(0o644)


def write_files(state: State, directory: Path) -> dict:
    """lab.json and inventory.yml (the only places that carry the lab's test credentials)."""
    base = state.get("address_base")
    ca = str(directory / "ca.pem")
    bo_url = f"https://{address(base, 1)}:{BACKOFFICE_PORT}/deviceservices"
    info: dict = {"backoffice": {"url": bo_url, "ca_path": ca},
                  "control_url": f"http://{address(base, 1)}:{CONTROL_PORT}", "ca_path": ca,
                  "truststore": str(directory / "truststore.p12"), "tools": str(directory / "tools"),
                  "elsewhere": elsewhere(base), "servers": {}}
    hosts: dict = {}
    for s in state.servers():
        url = f"{'https' if s.https else 'http'}://{s.address}:{SERVER_PORT}"
        info["servers"][s.name] = {"url": url, "address": s.address, "host_id": s.host_id, "security": s.security,
                                   "https": s.https, "username": s.username if s.security else None,
                                   "password": s.password if s.security else None}
        host: dict = {"fne_lls_url": url}
        if s.security:
            host.update(fne_lls_username=s.username, fne_lls_password=s.password)
        if s.https:
            host["fne_lls_ca_path"] = ca
        host["fne_lls_host_id"] = s.host_id
        hosts[s.name] = host
    group_vars = {"fne_backoffice_url": bo_url, "fne_backoffice_ca_path": ca,
                  **variants.settings(state.variants())}  # only what a user of such a site would have to write
    info["variants"] = state.variants()
    inventory = {"all": {"children": {"license_servers": {"hosts": hosts, "vars": group_vars}}}}
    _write_private(directory / "lab.json", json.dumps(info, indent=2) + "\n")
    _write_private(directory / "inventory.yml", yaml.safe_dump(inventory, sort_keys=False))
    return info


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
