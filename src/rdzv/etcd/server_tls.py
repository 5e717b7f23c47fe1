"""The TLS settings of an :class:`~rdzv.etcd.server.EtcdServer`, checked when they are made.

One record says how etcd serves clients (its certificate, the CA it trusts, whether
clients must present a certificate) and what this process presents to it (the
readiness probe and :meth:`~rdzv.etcd.server.EtcdServer.get_client`), so the
command line, the probe and the client agree.
"""

from __future__ import annotations

import ssl

import attrs

__all__ = ["ServerTLS"]


@attrs.frozen
class ServerTLS:
    """Certificates of an etcd server and of its local client; all ``None``: plain http.

    Raises:
        ValueError: an incomplete configuration: a certificate without its key, CA
            or client settings without a server certificate, TLS without
            ``trusted_ca_file``, or ``client_cert_auth`` without a client certificate.
    """

    cert_file: str | None = None
    key_file: str | None = None
    trusted_ca_file: str | None = None
    client_cert_auth: bool = False
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("Give both cert_file and key_file to serve over https, or neither.")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("Give both client_cert_file and client_key_file, or neither.")
        if self.cert_file is None:
            if self.trusted_ca_file or self.client_cert_auth or self.client_cert_file:
                raise ValueError(
                    "trusted_ca_file, client_cert_auth and client certificates need https: "
                    "give cert_file and key_file too."
                )
            return
        if self.trusted_ca_file is None:
            raise ValueError(
                "With TLS, give trusted_ca_file (the CA that signed cert_file): the readiness "
                "probe and get_client() verify the server with it."
            )
        if self.client_cert_auth and self.client_cert_file is None:
            raise ValueError(
                "client_cert_auth=True needs client_cert_file and client_key_file: the "
                "readiness probe and get_client() must present a client certificate."
            )

    @property
    def protocol(self) -> str:
        """``https`` with a server certificate, else ``http``."""
        return "https" if self.cert_file else "http"

    @property
    def client_cert(self) -> tuple[str, str] | None:
        """``(certificate, key)`` that this process presents to etcd, or ``None``."""
        if self.client_cert_file and self.client_key_file:
            return (self.client_cert_file, self.client_key_file)
        return None

    def etcd_flags(self) -> list[str]:
        """etcd's command-line flags for these settings."""
        flags: list[str] = []
        if self.cert_file and self.key_file:
            flags += [f"--cert-file={self.cert_file}", f"--key-file={self.key_file}"]
        if self.trusted_ca_file:
            flags.append(f"--trusted-ca-file={self.trusted_ca_file}")
        if self.client_cert_auth:
            flags.append("--client-cert-auth=true")
        return flags

    def client_context(self) -> ssl.SSLContext | None:
        """An SSL context that verifies etcd and presents :attr:`client_cert`; ``None`` for http."""
        if self.protocol != "https":
            return None
        context = ssl.create_default_context(cafile=self.trusted_ca_file)
        cert = self.client_cert
        if cert is not None:
            context.load_cert_chain(*cert)
        return context
