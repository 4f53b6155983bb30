"""A throw-away Orthanc with its DICOMweb plugin on loopback, and DICOM test studies for it.

Runs the Debian ``orthanc`` binary (packages ``orthanc`` and
``orthanc-dicomweb``) with its own configuration and storage in a folder of
its own, on a free loopback port, never as the system service. The tests and
``scripts/bench_dicomweb.py`` use it; run it by hand to try metastore
against a real archive:

    python scripts/orthanc_local.py --studies 4 --series 3 --instances 20

It prints the DICOMweb root and serves until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins")
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed, or it would not start."""


def find_orthanc() -> tuple[str, str]:
    """The Orthanc binary and the DICOMweb plugin, or ``OrthancUnavailable``."""
    binary = shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.path.exists(p)), None
    )
    plugin = next(
        (f"{d}/{DICOMWEB_PLUGIN}" for d in PLUGIN_DIRS if os.path.exists(f"{d}/{DICOMWEB_PLUGIN}")),
        None,
    )
    if binary is None or plugin is None:
        raise OrthancUnavailable(
            "Orthanc with DICOMweb is not installed: apt-get install orthanc orthanc-dicomweb"
        )
    return binary, plugin


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalOrthanc:
    """An Orthanc process on 127.0.0.1 with a throw-away storage folder.

    ``users`` ({name: password}) turns on HTTP basic authentication.
    Use as a context manager; ``root`` is the DICOMweb root URL.
    """

    def __init__(
        self,
        folder: Path | None = None,
        *,
        users: dict[str, str] | None = None,
        stable_age: int | None = None,
    ) -> None:
        self.binary, self.plugin = find_orthanc()
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="metastore-orthanc-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        # Seconds without a new instance before Orthanc calls a study stable (its default: 60).
        self.stable_age = stable_age
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.root = f"{self.base}/dicom-web"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.folder / "orthanc.log"

    @property
    def auth(self) -> tuple[str, str] | None:
        return next(iter(self.users.items()), None)

    def basic_header(self) -> str:
        """The Authorization header value of the first user."""
        assert self.auth is not None
        token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return f"Basic {token}"

    def start(self, timeout: float = 60.0) -> LocalOrthanc:
        config = {
            "Name": "metastore-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "DicomServerEnabled": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [self.plugin],
            "StorageCompression": False,
            "HttpCompressionEnabled": False,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }
        if self.stable_age is not None:
            config["StableAge"] = self.stable_age
        config_path = self.folder / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        log = self._log.open("wb")
        self._process = subprocess.Popen(
            [self.binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder
        )
        log.close()
        deadline = time.monotonic() + timeout
        with httpx.Client(auth=self.auth, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                try:
                    if client.get(f"{self.base}/system").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        tail = self._log.read_text(errors="replace")[-2000:]
        self.stop()
        raise OrthancUnavailable(f"Orthanc did not start on port {self.port}:\n{tail}")

    def delete(self, level: str, uid: str) -> None:
        """Delete a study or series (``level`` ``studies``/``series``) by its DICOM UID."""
        with self.client() as client:
            found = client.post("/tools/lookup", content=uid).json()
            for item in found:
                if item["Path"].startswith(f"/{level}/"):
                    client.delete(item["Path"]).raise_for_status()
                    return
        raise LookupError(f"{uid} is not in Orthanc")

    def client(self) -> httpx.Client:
        """A client for Orthanc's own REST API (with the first user's credentials)."""
        return httpx.Client(base_url=self.base, auth=self.auth, timeout=60.0)

    def upload(self, files: Iterable[bytes]) -> int:
        """POST each DICOM file to ``/instances``; returns how many were stored."""
        count = 0
        with self.client() as client:
            for data in files:
                response = client.post(
                    "/instances", content=data, headers={"Content-Type": "application/dicom"}
                )
                response.raise_for_status()
                count += 1
        return count

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=15)
        self._process = None
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LocalOrthanc:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def ct_study(
    *,
    series: int = 3,
    instances: int = 10,
    patient: str = "GEN001",
    index: int = 0,
    study_uid: str | None = None,
) -> Iterator[bytes]:
    """A generated multi-series CT study: small real DICOM files (Part 10 bytes).

    ``study_uid`` adds the series to that study (a new UID by default).
    """
    study_uid = study_uid or generate_uid()
    for s in range(1, series + 1):
        series_uid = generate_uid()
        for n in range(1, instances + 1):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            sop_uid = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = sop_uid
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.PatientID = patient
            ds.PatientName = f"Generated^Patient{index}"
            ds.PatientBirthDate = "19700101"
            ds.PatientSex = "O"
            ds.StudyDate = f"2024{1 + index % 12:02d}{1 + index % 28:02d}"
            ds.StudyTime = "101500"
            ds.StudyID = str(index)
            ds.AccessionNumber = f"ACC{index:05d}"
            ds.StudyDescription = f"generated CT study {index}"
            ds.Modality = "CT"
            ds.SeriesNumber = s
            ds.SeriesDescription = f"axial {s}"
            ds.InstanceNumber = n
            ds.ImagePositionPatient = [0.0, 0.0, float(n)]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing = [0.5, 0.5]
            ds.SliceThickness = 1.0
            ds.Rows = ds.Columns = 8
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = -1024
            ds.RescaleSlope = 1
            ds.PixelData = b"".join((k + n).to_bytes(2, "little") for k in range(64))
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            yield buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=2)
    parser.add_argument("--series", type=int, default=3)
    parser.add_argument("--instances", type=int, default=10)
    args = parser.parse_args()
    with LocalOrthanc() as orthanc:
        for i in range(args.studies):
            orthanc.upload(ct_study(series=args.series, instances=args.instances, index=i))
        print(f"DICOMweb root: {orthanc.root} (Ctrl-C stops and deletes it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
