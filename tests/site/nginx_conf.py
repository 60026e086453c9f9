"""deploy/nginx-luckrig.conf, run for real in front of test processes: the shipped file with only its machine
facts replaced (ports, certificate, static folder), inside a minimal main configuration of nginx's own."""

import contextlib
import datetime
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.processes import ROOT, free_port

SHIPPED = ROOT / "deploy" / "nginx-luckrig.conf"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def nginx_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stderr
    return tuple(int(x) for x in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out).groups())


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "luckrig test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def site_config(*, web_port: int, ws_ports: list[int], http_port: int, https_port: int, folder: Path,
                version: tuple[int, ...]) -> str:  # fmt: skip
    """The shipped server blocks with this machine's facts. Every replacement must match exactly once, so that
    an edit to the shipped file that this does not follow fails the test instead of testing something else."""
    text = SHIPPED.read_text()
    cert, key = self_signed(folder)
    replacements = [
        (r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{web_port};"),
        (
            r"server 127\.0\.0\.1:8001;\n\s*server 127\.0\.0\.1:8002;",
            "\n    ".join(f"server 127.0.0.1:{p};" for p in ws_ports),
        ),
        (r"listen 80;\n\s*listen \[::\]:80;", f"listen 127.0.0.1:{http_port};"),
        (r"listen 443 ssl;\n\s*listen \[::\]:443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        (r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};"),
        (r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};"),
        (r"alias /srv/luckrig/data/static/;", f"alias {folder / 'static'}/;"),
    ]
    if version < (1, 25, 1):  # what the shipped file's comment tells an operator on an older nginx to do
        replacements.append((r"\n\s*http2 on;", ""))
        replacements.append((rf"listen 127\.0\.0\.1:{https_port} ssl;", f"listen 127.0.0.1:{https_port} ssl http2;"))
    for pattern, value in replacements:
        text, n = re.subn(pattern, value.replace("\\", "\\\\"), text)
        assert n == 1, f"deploy/nginx-luckrig.conf no longer has {pattern!r} once"
    return text


@contextlib.contextmanager
def running_nginx(binary: str, folder: Path, **ports):
    """nginx in the foreground with the shipped site; yields (http base, https base, its certificate's file);
    stopped afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "static").mkdir(exist_ok=True)
    http_port, https_port = free_port(), free_port()
    site = site_config(http_port=http_port, https_port=https_port, folder=folder, version=nginx_version(binary),
                       **ports)  # fmt: skip
    (folder / "luckrig.conf").write_text(site)
    temp = folder / "temp"
    temp.mkdir(exist_ok=True)
    # Started by root, nginx's workers would run as nobody, who cannot read pytest's private temporary folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(
        f"""{user}daemon off;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {folder / "access.log"};
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {folder / "luckrig.conf"};
}}
"""
    )
    stderr = open(folder / "stderr.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [binary, "-c", str(folder / "nginx.conf"), "-p", str(folder)], stdout=subprocess.DEVNULL, stderr=stderr
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError("nginx exited: " + (folder / "stderr.log").read_text())
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", https_port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not listen within 15 s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}", str(folder / "cert.pem")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        stderr.close()
