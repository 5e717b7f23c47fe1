"""The etcd v2 directories beside an ``etcd-v2`` rendezvous state: intent log segments, heartbeats.

:class:`V2Directories` writes files into them, lists and deletes them, and
reports a plain key where a directory belongs (:class:`RendezvousStateError`)
or an etcd that fails (:class:`RendezvousConnectionError`) as the backend does.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import etcd

from rdzv.api import RendezvousStateError
from rdzv.etcd.v2_connect import ETCD_ERRORS, connection_error

__all__ = ["DirEntry", "V2Directories"]


class DirEntry(NamedTuple):
    """A file of an etcd directory: its key, creation index and value."""

    key: str
    created: int
    value: str | None


class V2Directories:
    """The directories under the rendezvous state ``state_key`` (for messages) over ``client``."""

    def __init__(self, client: etcd.Client, state_key: str) -> None:
        self._client = client
        self._key = state_key

    @property
    def _endpoint(self) -> str:
        return str(self._client.base_uri)

    def write(self, path: str, value: str, directory: str, **options: Any) -> None:
        """Write ``path`` (with ``append``: a new file in it), a file of ``directory``.

        Raises:
            RendezvousStateError: a plain key stands where ``directory`` belongs.
            RendezvousConnectionError: etcd cannot be reached.
        """
        try:
            self._client.write(path, value, **options)
        except (etcd.EtcdNotDir, etcd.EtcdNotFile) as e:
            raise self.plain_key_error(e, directory) from e
        except ETCD_ERRORS as e:
            raise connection_error(self._endpoint, e) from e

    def files(self, path: str) -> list[DirEntry]:
        """The files of directory ``path`` (none when it does not exist).

        Parsed here rather than by python-etcd, whose result objects cost ten
        times more: at a thousand pending intents this read is most of a join.
        """
        client = self._client
        try:
            response = client.api_execute(
                client.key_endpoint + path, client._MGET, params={"recursive": "true"}
            )
            node = json.loads(response.data)["node"]
        except etcd.EtcdKeyNotFound:
            return []
        except (etcd.EtcdNotDir, etcd.EtcdNotFile) as e:
            raise self.plain_key_error(e, path) from e  # a plain key above ``path``
        except ETCD_ERRORS as e:
            raise connection_error(self._endpoint, e) from e
        except (ValueError, KeyError, TypeError) as e:
            raise connection_error(self._endpoint, e) from e
        if not node.get("dir"):
            raise self.not_a_directory(path)
        files: list[DirEntry] = []
        pending = list(node.get("nodes", ()))
        while pending:
            child = pending.pop()
            if child.get("dir"):
                pending.extend(child.get("nodes", ()))
            else:
                files.append(DirEntry(child["key"], child["createdIndex"], child.get("value")))
        return files

    def delete_numbered_below(self, parent: str, segment: int) -> None:
        """Delete the directories of ``parent`` (the log) numbered below ``segment``.

        Usually that is only ``segment - 1``, but a node that posted with a stale
        cursor may have created an older one again. The directory is listed first
        (a read served by the member) so that the many nodes that see the same
        full segment do not each send deletes that etcd must order through raft.
        """
        if segment == 0:
            return
        try:
            listing = self._client.read(parent)
        except etcd.EtcdKeyNotFound:
            return
        except (etcd.EtcdNotDir, etcd.EtcdNotFile) as e:
            raise self.plain_key_error(e, parent) from e
        except ETCD_ERRORS as e:
            raise connection_error(self._endpoint, e) from e
        for child in listing.children:
            name = child.key.rsplit("/", 1)[-1]
            # python-etcd lists an empty directory as its own child; and leave alone
            # whatever is not a segment (such as intents of an rdzv before segments).
            is_segment = child.dir and child.key != listing.key and name.isascii()
            if not is_segment or not name.isdigit() or int(name) >= segment:
                continue
            try:
                self._client.delete(child.key, recursive=True, dir=True)
            except etcd.EtcdKeyNotFound:
                pass  # another node deleted it first
            except ETCD_ERRORS as e:
                raise connection_error(self._endpoint, e) from e

    def not_a_directory(self, path: str) -> RendezvousStateError:
        """The error for a plain key at ``path``, where rdzv keeps a directory."""
        return RendezvousStateError(
            f"The etcd key {path} at {self._endpoint} is a plain key, but rdzv keeps a "
            "directory there (of join intents or heartbeats) for the rendezvous state "
            f"{self._key}. Something else wrote it; delete it (e.g. `curl -X DELETE "
            f"{self._endpoint}/v2/keys{path}`) and start the nodes again."
        )

    def plain_key_error(self, error: etcd.EtcdException, path: str) -> RendezvousStateError:
        """:meth:`not_a_directory` for the plain key that made a request on ``path`` fail.

        etcd names it in the error's cause: ``path`` itself or a directory above it
        (``<key>.intents`` above a segment).
        """
        cause = (error.payload or {}).get("cause")
        if isinstance(cause, str) and cause and (path + "/").startswith(cause.rstrip("/") + "/"):
            return self.not_a_directory(cause.rstrip("/"))
        return self.not_a_directory(path)
