"""The MONAI Label steps of the segmentation bundle's docs, run as written: a real server, infer, train, infer.

    .venv-monailabel/bin/python tools/monailabel_check.py --workdir OUT --project_python .venv/bin/python
        [--port 8123] [--overwrite]

What ``make test-monailabel`` runs (not part of ``make test``: MONAI Label 0.8.5 and its
dependencies are a separate venv of about 8 GB, tools/monailabel-requirements.txt, which the
Makefile installs with step 1's two commands). It runs under that venv's Python.

The command blocks of "MONAI Label, step by step" in
``bundles/cmr_unet_segmentation/docs/inference.md`` are read from that file and run by bash,
unchanged but for the user's own names (``PLACEHOLDERS``: ``/data/...`` folders, ``FRAME_ID``,
the port), in ``OUT``, which holds links named as the steps expect them at the repository
root (``.venv`` to ``--project_python``'s venv, ``.venv-monailabel`` to this one, ``tools``,
``bundles``), so ``apps/`` is written below ``OUT``. A block missing, one more, or a
placeholder gone from its block fails the check before anything runs. In order:

1. data: ``OUT/cohort``, a 3-subject phantom cohort (``tools/phantom.py``);
   ``OUT/sax_frames``: 6 of its 3D NIfTI frames as studies, 5 of them with their labels in
   ``labels/final/``, and ACDC's patient001 frame 1 (unlabelled) when ``../shared/data`` is
   beside the repository; the DICOM series: Sunnybrook's SCD0000101 from there, or else the
   phantom's short-axis DICOM;
2. step 2 (app and export; the export must carry the shipped ``models/model.pt``);
3. step 3 (the DICOM series converted, ``OUT/cine_series/frames``), step 4 serving those
   frames, step 5 on the end-diastolic frame with the shipped model: the mask has the
   frame's shape and affine, labels 0-3 with all three structures, and the frame's voxel
   corners are the DICOM's (``ImagePositionPatient``, ``ImageOrientationPatient``,
   ``PixelSpacing``);
4. step 4 serving ``OUT/sax_frames`` (``GET /info/``: the model, 3D, its three labels, its
   trainer), step 5 on an unlabelled phantom frame, step 6 (one epoch; ``models/model.pt``
   replaced), step 5 again after the reload, and on the ACDC frame, whose mask must carry
   the image's affine as nibabel reads it (its sform says 1 mm, its pixdim holds the
   spacing).

Each server is stopped (the process group this script started, nothing else). Prints one line
per check and ``N passed, N failed``; exits 1 on any failure. Writes only below ``OUT``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE = REPO_ROOT / "bundles" / "cmr_unet_segmentation"
DOC = BUNDLE / "docs" / "inference.md"
SECTION = "### MONAI Label, step by step"
MODEL = "cmr_unet_segmentation"
#: each command block of the section, by a text only it holds
BLOCKS = {"install": "pip install", "export": "tools/export.py", "convert": "tools/convert.py",
          "serve": "start_server", "infer": f"/infer/{MODEL}", "train": f"/train/{MODEL}"}
#: the user's own names in the blocks, replaced by the check's
PLACEHOLDERS = {"convert": ("/data/dicom/cine_series", "/data/cine_series"), "serve": ("/data/sax_frames", "8000"),
                "infer": ("FRAME_ID", "8000"), "train": ("8000",)}
LABEL_NAMES = {"left ventricle cavity": 1, "left ventricle myocardium": 2, "right ventricle cavity": 3}
SHARED = REPO_ROOT.parent / "shared" / "data"
ACDC_FRAME = SHARED / "acdc" / "training" / "patient001" / "patient001_frame01.nii.gz"
SUNNYBROOK_SERIES = SHARED / "sunnybrook" / "dicoms" / "SCD0000101"


def readme_blocks(doc: Path = DOC) -> Dict[str, str]:
    """The section's bash blocks by role (``BLOCKS``); raises ``ValueError`` naming what changed."""
    text = doc.read_text()
    if SECTION not in text:
        raise ValueError(f"{doc}: no section {SECTION!r}")
    section = re.split(r"\n#{1,3} ", text.split(SECTION, 1)[1], maxsplit=1)[0]
    blocks = [textwrap.dedent(b) for b in re.findall(r"```bash\n(.*?)\n[ \t]*```", section, re.S)]
    found = {role: [b for b in blocks if key in b] for role, key in BLOCKS.items()}
    problems = [f"{len(v)} blocks with {BLOCKS[k]!r}" for k, v in found.items() if len(v) != 1]
    problems += [f"a block of no known step: {b.splitlines()[0]!r}" for b in blocks
                 if not any(key in b for key in BLOCKS.values())]
    problems += [f"the {role} block lost {name!r}" for role, names in PLACEHOLDERS.items()
                 for name in names if found[role] and name not in found[role][0]]
    if problems:
        raise ValueError(f"{doc}, {SECTION!r}: " + "; ".join(problems))
    return {role: v[0] for role, v in found.items()}


def literal(block: str, names: Dict[str, str]) -> str:
    """``block`` with the user's names replaced; the port only where it is one (``:8000/``, ``--port 8000``)."""
    paths = {name: value for name, value in names.items() if name != "8000"}
    rest = re.sub("|".join(map(re.escape, paths)), "", block) if paths else block
    if "/data/" in rest:  # a user's path the check does not know: it would read or write outside OUT
        raise ValueError(f"a user's path in the block beside {sorted(paths)}:\n{block}")
    if paths:  # at once, longest first: no replacement is replaced again
        pattern = "|".join(map(re.escape, sorted(paths, key=len, reverse=True)))
        block = re.sub(pattern, lambda match: paths[match.group(0)], block)
    if "8000" in names:
        block = block.replace(":8000/", f":{names['8000']}/").replace("--port 8000", f"--port {names['8000']}")
    return block


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


def _bash(block: str, workdir: Path, env: Dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess:
    """One block of the docs, as a user's shell runs it (stopping at the first failing command)."""
    return subprocess.run(["bash", "-eo", "pipefail", "-c", block], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _info(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/info/", timeout=10) as response:
        return json.loads(response.read())


def prepare(workdir: Path, project_python: str) -> Dict[str, Path]:
    """The data and the repository links the steps name; returns the studies folder and the DICOM series."""
    venv = Path(os.path.abspath(project_python)).parent.parent  # not resolved: a venv's python is a link
    links = {".venv": venv, ".venv-monailabel": Path(sys.prefix), "tools": REPO_ROOT / "tools",
             "bundles": REPO_ROOT / "bundles"}
    for name, target in links.items():
        (workdir / name).symlink_to(target, target_is_directory=True)
    cohort = workdir / "cohort"
    _run([project_python, REPO_ROOT / "tools" / "phantom.py", "--out", cohort, "--subjects", 3, "--seed", 0,
          "--num_frames", 4, "--image_size", 64], timeout=600)
    studies = workdir / "sax_frames"
    (studies / "labels" / "final").mkdir(parents=True)
    frames = sorted(p for p in cohort.glob("phantom_*/frames/frame_??.nii.gz")
                    if p.name in ("frame_00.nii.gz", "frame_02.nii.gz"))
    for number, frame in enumerate(frames[:6]):
        name = f"{frame.parent.parent.name}_{frame.name}"
        shutil.copy2(frame, studies / name)
        if number < 5:  # one study stays unlabelled, as in a labelling session
            shutil.copy2(frame.with_name(frame.name.replace(".nii.gz", "_gt.nii.gz")), studies / "labels" / "final" / name)
    if ACDC_FRAME.is_file():  # the real data, when this checkout has it beside it: an unlabelled study too
        shutil.copy2(ACDC_FRAME, studies / ACDC_FRAME.name)
    series = SUNNYBROOK_SERIES if SUNNYBROOK_SERIES.is_dir() else cohort / "phantom_000" / "dicom" / "sax"
    return {"studies": studies, "series": series}


def corners_from_dicom(series: Path):
    """The in-plane corner voxels' centres of every slice position of a DICOM series, LPS mm."""
    import numpy as np
    import pydicom

    points = {}
    for path in sorted(series.iterdir()):
        header = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        if "ImagePositionPatient" not in header:
            continue
        origin = np.array(header.ImagePositionPatient, float)
        along_row, along_column = np.array(header.ImageOrientationPatient, float).reshape(2, 3)
        row_spacing, column_spacing = map(float, header.PixelSpacing)  # between rows, between columns
        for r in (0, int(header.Rows) - 1):
            for c in (0, int(header.Columns) - 1):
                point = origin + c * column_spacing * along_row + r * row_spacing * along_column
                points[tuple(np.round(point, 2))] = point
    return np.array(list(points.values()))


def corners_from_nifti(image):
    """The same corners of a 3D NIfTI frame, from its affine as nibabel reads it, LPS mm."""
    import numpy as np

    x, y, z = image.shape[:3]
    voxels = np.array([(i, j, k, 1) for k in range(z) for i in (0, x - 1) for j in (0, y - 1)], float)
    return (image.affine @ voxels.T).T[:, :3] * np.array([-1, -1, 1])  # RAS -> LPS


@contextlib.contextmanager
def serve(block: str, workdir: Path, env: Dict[str, str], base: str, log_path: Path) -> Iterator[Optional[dict]]:
    """Step 4's block in the background until ``GET /info/`` answers; yields the answer (None: it did not start)."""
    with open(log_path, "w") as log:
        server = subprocess.Popen(["bash", "-c", block], stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                  start_new_session=True)
        try:
            info = None
            deadline = time.monotonic() + 300
            while info is None and time.monotonic() < deadline and server.poll() is None:
                try:
                    info = _info(base)
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(2)
            yield info
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started, nothing else
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="monailabel_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--project_python", required=True, help="the project's venv Python (phantom, export)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        blocks = readme_blocks()
    except ValueError as error:
        print(f"FAIL the docs' steps: {error}", file=sys.stderr)
        return 1
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
    data = prepare(workdir, args.project_python)
    port = str(args.port)
    base = f"http://127.0.0.1:{port}"
    (workdir / "tmp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
           "TMPDIR": str(workdir / "tmp")}  # the server's temporary results stay below OUT too
    checks = Checks()

    def step(name: str, block: str, timeout: float = 1800) -> bool:
        result = _bash(block, workdir, env, timeout)
        return checks.check(name, result.returncode == 0, f"exit {result.returncode}: "
                            f"{(result.stderr + result.stdout)[-2000:]}" if result.returncode else "")

    def infer(name: str, image: Path, all_structures: bool = False) -> None:
        image_id = image.name[: -len(".nii.gz")]
        started = time.monotonic()
        if not step(f"{name}: step 5", literal(blocks["infer"], {"FRAME_ID": image_id, "8000": port}), 600):
            return
        result = workdir / f"{image_id}_seg.nii.gz"
        kept = result.rename(workdir / f"{name.split()[0]}_{result.name}")  # step 5 again writes the same name
        mask, reference = nib.load(str(kept)), nib.load(str(image))
        values = set(np.unique(np.asarray(mask.dataobj)).astype(int).tolist())
        checks.check(f"{name}: shape", mask.shape == reference.shape, f"{mask.shape} vs {reference.shape}")
        checks.check(f"{name}: the image's affine", np.allclose(mask.affine, reference.affine, atol=1e-3),
                     f"mask {np.round(mask.affine, 4).tolist()}, image {np.round(reference.affine, 4).tolist()}")
        checks.check(f"{name}: labels within 0-3", values <= {0, 1, 2, 3},
                     f"{sorted(values)}, {time.monotonic() - started:.1f} s")
        if all_structures:
            checks.check(f"{name}: the shipped model finds LV cavity, myocardium and RV", values >= {1, 2, 3})

    # step 2: the app and the export
    if not step("step 2: the sample app and the export", blocks["export"], 600):
        return 1
    weights = workdir / "apps" / "monaibundle" / "model" / MODEL / "models" / "model.pt"
    checks.check("the export carries the shipped model", weights.is_file()
                 and weights.read_bytes() == (BUNDLE / "models" / "model.pt").read_bytes())

    # step 3 on a DICOM series, then steps 4-5 on its converted frames, with the shipped model
    converted = workdir / "cine_series"
    series = data["series"]
    if step(f"step 3: DICOM series {series.name} converted", literal(
            blocks["convert"], {"/data/dicom/cine_series": str(series), "/data/cine_series": str(converted)})):
        frame = converted / "frames" / "frame_00.nii.gz"
        found, written = corners_from_dicom(series), corners_from_nifti(nib.load(str(frame)))
        distance = np.linalg.norm(written[:, None] - found[None], axis=-1).min(axis=1) if len(found) else [np.inf]
        checks.check(f"DICOM {series.name}: the frame's voxel corners are the DICOM's", len(found) == len(written)
                     and float(np.max(distance)) < 0.05, f"{len(written)} corners, {len(found)} in the DICOM, "
                     f"largest distance {float(np.max(distance)):.4f} mm")
        served = literal(blocks["serve"], {"/data/sax_frames": str(frame.parent), "8000": port})
        with serve(served, workdir, env, base, workdir / "server_dicom.log") as info:
            if checks.check("step 4 on the converted series, GET /info/", info is not None):
                infer(f"dicom {series.name} frame_00", frame, all_structures=True)

    # steps 4-6 on the NIfTI studies: infer, train, infer after the reload, the ACDC frame
    studies = data["studies"]
    with serve(literal(blocks["serve"], {"/data/sax_frames": str(studies), "8000": port}), workdir, env, base,
               workdir / "server.log") as info:
        if not checks.check("step 4, GET /info/", info is not None, f"log: {workdir / 'server.log'}"):
            return 1
        model = info.get("models", {}).get(MODEL, {})
        checks.check("/info: model listed as 3D with the three labels", model.get("dimension") == 3
                     and model.get("labels") == LABEL_NAMES, json.dumps({k: model.get(k) for k in ("dimension", "labels")}))
        checks.check("/info: trainer listed", MODEL in info.get("trainers", {}), ", ".join(info.get("trainers", {})))
        unlabelled = sorted(p for p in studies.glob("phantom_*.nii.gz")
                            if not (studies / "labels" / "final" / p.name).exists())[0]
        infer("infer before training", unlabelled, all_structures=True)
        if (studies / ACDC_FRAME.name).is_file():  # its sform says 1 mm, its pixdim holds the spacing
            infer(f"acdc {ACDC_FRAME.name[: -len('.nii.gz')]}", studies / ACDC_FRAME.name, all_structures=True)
        before = weights.read_bytes()
        started = time.monotonic()
        if step("step 6: POST /train, one epoch", literal(blocks["train"], {"8000": port})):
            checks.check("step 6: models/model.pt replaced", weights.is_file() and weights.read_bytes() != before,
                         f"{time.monotonic() - started:.0f} s")
            checks.check("no unfinished run left", not list(weights.parent.glob("*.partial")))
        infer("reinfer after the reload", unlabelled)
    print(f"{checks.passed} passed, {len(checks.failed)} failed (server logs: {workdir}/server*.log)")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
