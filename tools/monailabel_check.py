"""A real MONAI Label server with the exported segmentation bundle: info, infer, train, infer again.

    .venv-monailabel/bin/python tools/monailabel_check.py --workdir OUT --project_python .venv/bin/python
        [--port 8123] [--overwrite]

What ``make test-monailabel`` runs (not part of ``make test``: MONAI Label 0.8.5 and its
dependencies are a separate venv of about 8 GB, tools/monailabel-requirements.txt). It runs
under that venv's Python; the project's own steps (phantom, export) run under
``--project_python``. All it writes is below OUT:

1. ``OUT/cohort``: a 3-subject phantom cohort (``tools/phantom.py``, NIfTI only);
   ``OUT/studies``: 6 of its 3D NIfTI frames as studies, 5 of them with their labels in
   ``labels/final/`` (MONAI Label's local datastore), and ACDC's patient001 frame 1 (unlabelled)
   when ``../shared/data`` is beside the repository;
2. ``OUT/app``: MONAI Label's own ``monaibundle`` sample app, copied from the installed
   package, with ``model/cmr_unet_segmentation`` exported by ``tools/export.py --cpu`` as the
   bundle's docs/inference.md says (the default network, and the shipped ``models/model.pt`` it carries);
3. ``monailabel start_server`` on 127.0.0.1 (``--conf models cmr_unet_segmentation``,
   ``zoo_source github`` so the local bundle is used and nothing is downloaded, ``sam2
   false``), then: ``GET /info/`` (the model, 3D, the three labels, a trainer);
   ``POST /infer/cmr_unet_segmentation?image=...&output=image`` before any training (the
   mask has the frame's shape and affine, labels within 0-3, and the shipped model finds
   all three structures); ``POST /train/cmr_unet_segmentation?run_sync=true``
   for one epoch (``models/model.pt`` replaced); inference again after the reload; and on the
   ACDC frame, whose mask must carry the image's affine as nibabel reads it (its sform says 1 mm,
   its pixdim holds the spacing);
4. the server is stopped (the process this script started, by its id).

Prints one line per check and ``N passed, N failed``; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "cmr_unet_segmentation"
MODEL = "cmr_unet_segmentation"
#: the export's options, as the MONAI Label steps of the bundle's docs/inference.md give them
EXPORT_OPTIONS = ["--cpu"]
LABEL_NAMES = {"left ventricle cavity": 1, "left ventricle myocardium": 2, "right ventricle cavity": 3}

class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: List[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        print(f"{'PASS' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""), flush=True)
        return ok


def _run(command: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def _request(url: str, data: Optional[bytes] = None, timeout: float = 600, json_body: bool = False):
    headers = {"Content-Type": "application/json"} if json_body else (
        {"Content-Type": "application/x-www-form-urlencoded"} if data is not None else {})
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def prepare(workdir: Path, project_python: str) -> Path:
    """Cohort, studies with labels, the sample app with the exported bundle and its weights; returns the app."""
    _run([project_python, REPO_ROOT / "tools" / "phantom.py", "--out", workdir / "cohort", "--subjects", 3,
          "--seed", 0, "--no_dicom", "--num_frames", 4, "--image_size", 64], timeout=600)
    studies = workdir / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    frames = sorted(p for p in (workdir / "cohort").glob("phantom_*/frames/frame_??.nii.gz")
                    if p.name in ("frame_00.nii.gz", "frame_02.nii.gz"))
    for number, frame in enumerate(frames[:6]):
        name = f"{frame.parent.parent.name}_{frame.name}"
        shutil.copy2(frame, studies / name)
        if number < 5:  # one study stays unlabelled, as in a labelling session
            shutil.copy2(frame.with_name(frame.name.replace(".nii.gz", "_gt.nii.gz")), studies / "labels" / "final" / name)
    acdc = REPO_ROOT.parent / "shared" / "data" / "acdc" / "training" / "patient001" / "patient001_frame01.nii.gz"
    if acdc.is_file():  # the real data, when this checkout has it beside it: an unlabelled study too
        shutil.copy2(acdc, studies / acdc.name)
    sample = Path(sys.prefix) / "monailabel" / "sample-apps" / "monaibundle"  # the wheel's data files
    app = workdir / "app"
    shutil.copytree(sample, app, ignore=shutil.ignore_patterns("__pycache__"))
    bundle = app / "model" / MODEL
    _run([project_python, REPO_ROOT / "tools" / "export.py", BUNDLE, bundle, *EXPORT_OPTIONS], timeout=600)
    return app


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="monailabel_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--project_python", required=True, help="the project's venv Python (phantom, export)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    if workdir.exists():
        if not args.overwrite or REPO_ROOT == workdir or workdir in REPO_ROOT.parents:
            print(f"monailabel_check: error: {workdir} exists (use --overwrite; never the repository)", file=sys.stderr)
            return 2
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    import monailabel
    import nibabel as nib
    import numpy as np

    print(f"monailabel {monailabel.__version__}, python {sys.version.split()[0]}", flush=True)
    app = prepare(workdir, args.project_python)
    studies = workdir / "studies"
    base = f"http://127.0.0.1:{args.port}"
    (workdir / "tmp").mkdir()
    log = open(workdir / "server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "monailabel"), "start_server", "--app", str(app), "--studies",
         str(studies), "--conf", "models", MODEL, "--conf", "zoo_source", "github", "--conf", "sam2", "false",
         "--host", "127.0.0.1", "--port", str(args.port)],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
        # the monailabel launcher runs the `python` it finds first on PATH
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
             "OMP_NUM_THREADS": "2", "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
             "TMPDIR": str(workdir / "tmp")},  # the server's temporary results stay below OUT too
    )
    checks = Checks()
    try:
        info = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            try:
                info = json.loads(_request(f"{base}/info/", timeout=10))
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(2)
        if not checks.check("server started, GET /info/", info is not None, f"exit {server.poll()}" if info is None
                            else f"{info.get('name')}"):
            return 1
        model = info.get("models", {}).get(MODEL, {})
        checks.check("/info: model listed as 3D with the three labels", model.get("dimension") == 3
                     and model.get("labels") == LABEL_NAMES, json.dumps({k: model.get(k) for k in ("dimension", "labels")}))
        checks.check("/info: trainer listed", MODEL in info.get("trainers", {}), ", ".join(info.get("trainers", {})))

        acdc_id = next((p.name[: -len(".nii.gz")] for p in studies.glob("patient*.nii.gz")), None)
        image_id = sorted(p.name[: -len(".nii.gz")] for p in studies.glob("phantom_*.nii.gz"))[-1]  # unlabelled
        reference = nib.load(str(studies / f"{image_id}.nii.gz"))

        def infer(name: str) -> None:
            started = time.monotonic()
            try:
                body = _request(f"{base}/infer/{MODEL}?image={image_id}&output=image", data=b"params=%7B%7D")
            except urllib.error.HTTPError as error:
                checks.check(name, False, f"HTTP {error.code}: {error.read()[-2000:]!r}")
                return
            result = workdir / f"{name.split()[0]}_{image_id}.nii.gz"
            result.write_bytes(body)
            mask = nib.load(str(result))
            values = set(np.unique(np.asarray(mask.dataobj)).astype(int).tolist())
            checks.check(f"{name}: shape", mask.shape == reference.shape, f"{mask.shape} vs {reference.shape}")
            checks.check(f"{name}: affine", np.allclose(mask.affine, reference.affine, atol=1e-3))
            checks.check(f"{name}: labels within 0-3", values <= {0, 1, 2, 3},
                         f"{sorted(values)}, {time.monotonic() - started:.1f} s")
            if name.startswith("infer "):  # the shipped model, before any training
                checks.check(f"{name}: the shipped model finds LV cavity, myocardium and RV", values >= {1, 2, 3})

        weights = app / "model" / MODEL / "models" / "model.pt"
        checks.check("the export carries the shipped model", weights.is_file()
                     and weights.read_bytes() == (BUNDLE / "models" / "model.pt").read_bytes())
        infer("infer POST /infer")
        before = weights.read_bytes()
        started = time.monotonic()
        try:
            _request(f"{base}/train/{MODEL}?run_sync=true", data=json.dumps(
                {"max_epochs": 1, "device": "cpu", "val_split": 0.2, "multi_gpu": False}).encode(), json_body=True,
                timeout=1800)
            trained = True
        except urllib.error.HTTPError as error:
            trained = checks.check("POST /train", False, f"HTTP {error.code}: {error.read()[-2000:]!r}")
        if trained:
            checks.check("POST /train one epoch: models/model.pt replaced", weights.is_file()
                         and weights.read_bytes() != before, f"{time.monotonic() - started:.0f} s")
            checks.check("no unfinished run left", not list(weights.parent.glob("*.partial")))
        infer("reinfer after the reload")
        if acdc_id:  # a real frame whose sform says 1 mm and whose pixdim holds the spacing
            image_id, reference = acdc_id, nib.load(str(studies / f"{acdc_id}.nii.gz"))
            infer(f"ACDC frame {acdc_id}")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started, nothing else
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()
    print(f"{checks.passed} passed, {len(checks.failed)} failed (server log: {workdir / 'server.log'})")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
