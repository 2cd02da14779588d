"""Build the lab's pause image offline: a static binary in an OCI image archive.

No registry is reachable, so the sandbox image is made here: `gcc -static`
compiles pause.c, and the archive (OCI image layout, one uncompressed layer) is
written with the standard library for `ctr images import`.
"""

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile

import layout


def compile_pause(out_path: str) -> None:
    subprocess.run(["gcc", "-static", "-Os", "-s", "-o", out_path, layout.PAUSE_SOURCE],
                   check=True, capture_output=True, text=True)


def _layer(pause_binary: bytes) -> bytes:
    """A reproducible tar with /pause and an empty /etc (containerd mounts resolv.conf there)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        etc = tarfile.TarInfo("etc")
        etc.type, etc.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(etc)
        info = tarfile.TarInfo("pause")
        info.mode, info.size = 0o755, len(pause_binary)
        tar.addfile(info, io.BytesIO(pause_binary))
    return buf.getvalue()


def _blob(blobs: dict, data: bytes, media_type: str) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_archive(pause_binary: bytes, archive_path: str, name: str = layout.PAUSE_IMAGE) -> None:
    layer = _layer(pause_binary)
    blobs: dict[str, bytes] = {}
    layer_desc = _blob(blobs, layer, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = _blob(blobs, _json(config), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = _blob(blobs, _json(manifest), "application/vnd.oci.image.manifest.v1+json")
    # containerd's importer names the image from io.containerd.image.name
    manifest_desc["annotations"] = {"io.containerd.image.name": name,
                                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}

    def add(tar, path, data):
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(archive_path, "w") as tar:
        add(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        add(tar, "index.json", _json(index))
        for digest, data in blobs.items():
            add(tar, "blobs/sha256/" + digest.split(":", 1)[1], data)


def build(archive_path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        binary = os.path.join(tmp, "pause")
        compile_pause(binary)
        with open(binary, "rb") as f:
            write_archive(f.read(), archive_path)
