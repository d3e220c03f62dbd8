"""The Dockerfile's own steps, run without a Docker engine.

The build stage's ENV, COPY and RUN instructions are read from the Dockerfile and run in a
temporary directory (the image's paths mapped into it), then the final stage's CMD serves
from the venv alone and its HEALTHCHECK command is run against it. What this cannot check:
the base image, BuildKit's mounts and cache, the user and directory created with
groupadd/useradd/install, USER, VOLUME and the engine's scheduling of the health check.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from app.testing import free_port, stop_server
from tests.conftest import FAST_HASHING

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def stages() -> list[Stage]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), comments dropped
    and continuation lines joined; the first, named "global", holds the ARGs before FROM."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: list[Stage] = [Stage("global")]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            name = args.split(" AS ")[1].strip() if " AS " in args else ""
            found.append(Stage(name))
        else:
            found[-1].instructions.append((keyword, " ".join(args.split())))
    return found


def env_of(instruction: str) -> dict[str, str]:
    """`ENV A=1 B="x y"` as a dict (the only ENV form this Dockerfile uses)."""
    return dict(item.split("=", 1) for item in shlex.split(instruction))


def exec_form(instruction: str) -> list[str]:
    """A CMD or HEALTHCHECK CMD in exec (JSON) form."""
    command: list[str] = json.loads(instruction[instruction.index("[") :])
    return command


def uv() -> str:
    return os.environ.get("UV") or shutil.which("uv") or str(REPO / "tools" / "uv")


@dataclass
class Image:
    root: Path  # stands for the image's /
    env: dict[str, str]
    final: Stage

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def map(self, value: str) -> str:
        """Image paths (/app, /data, /src) to their places under root."""
        return re.sub(r"(?<![\w.])/(app|data|src)\b", lambda m: f"{self.root}/{m[1]}", value)


def build(root: Path) -> Image:
    """Run the build stage's steps as the Dockerfile gives them, with uv on the PATH."""
    (builder,) = [s for s in stages() if s.name == "build"]
    image = Image(root, {}, stages()[-1])
    base = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    base["PATH"] = f"{Path(uv()).parent}{os.pathsep}{base['PATH']}"
    workdir = root
    for keyword, args in builder.instructions:
        if keyword == "ENV":
            image.env.update({k: image.map(v) for k, v in env_of(args).items()})
        elif keyword == "WORKDIR":
            workdir = image.path(args)
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY" and not args.startswith("--from"):
            *sources, target = args.split()
            for source in sources:
                into = len(sources) > 1 or target.endswith("/")
                _copy(REPO / source, workdir / target, many=into)
        elif keyword == "RUN":
            command, bound = _run(args, workdir)
            done = subprocess.run(
                ["sh", "-ec", command],
                cwd=workdir,
                env={**base, **image.env},
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, f"RUN {command}\n{done.stderr[-3000:]}"
            for path in bound:  # a bind mount is not part of the layer
                path.unlink()
    return image


def _copy(source: Path, target: Path, many: bool) -> None:
    """COPY from the context: a directory's contents go into the target; a file goes into a
    target directory (one ending in / or several sources) or becomes the target."""
    if source.is_dir():
        shutil.copytree(
            source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    elif many or target.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / source.name)
    else:
        shutil.copy2(source, target)


def _run(args: str, workdir: Path) -> tuple[str, list[Path]]:
    """A RUN's shell command, and its bind mounts of the context made as copies."""
    words = args.split()
    bound = []
    for mount in (w for w in words if w.startswith("--mount=")):
        options = dict(o.split("=", 1) for o in mount.removeprefix("--mount=").split(","))
        if options.get("type") == "bind":
            bound.append(workdir / options["target"])
            bound[-1].parent.mkdir(parents=True, exist_ok=True)  # as BuildKit makes it
            shutil.copy2(REPO / options["source"], bound[-1])
    return " ".join(w for w in words if not w.startswith("--mount=")), bound


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    image = build(tmp_path_factory.mktemp("image"))
    # The final stage copies only the venv: the sources must not be needed at run time.
    shutil.rmtree(image.path("/src"))
    runtime = image.final.all("ENV")
    for instruction in runtime:
        image.env.update({k: image.map(v) for k, v in env_of(instruction).items()})
    image.path("/data").mkdir()
    return image


def run_env(image: Image, extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH"} and not k.startswith("MSGSYNC_")
    }
    # ${PATH} in the Dockerfile's ENV PATH is the image's: here, this machine's.
    path = image.env["PATH"].replace("${PATH}", base["PATH"])
    return {**base, **image.env, "PATH": path, **(extra or {})}


def test_the_venv_alone_runs_msgsync(image: Image) -> None:
    done = subprocess.run(
        ["msgsync", "--version"],
        cwd=image.path("/data"),
        env=run_env(image),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("msgsync ")
    where = subprocess.run(
        ["python", "-c", "import app; print(app.__file__)"],
        cwd=image.path("/data"),
        env=run_env(image),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(image.path("/app/.venv"))


@pytest.mark.server
def test_cmd_serves_sqlite_on_the_volume_and_the_healthcheck_sees_it(image: Image) -> None:
    port = str(free_port())  # 8000 may be taken on a shared machine: the one change made
    (healthcheck,) = image.final.all("HEALTHCHECK")
    probe = [w.replace(":8000/", f":{port}/") for w in exec_form(healthcheck)]
    assert "curl" not in probe
    (cmd,) = image.final.all("CMD")
    command = [port if w == "8000" else w for w in exec_form(cmd)]
    env = run_env(image, {f"MSGSYNC_{k.upper()}": str(v) for k, v in FAST_HASHING.items()})

    def healthy() -> bool:
        return subprocess.run(probe, env=env, capture_output=True, check=False).returncode == 0

    assert not healthy()  # nothing serves yet: the probe must be able to fail
    process = subprocess.Popen(command, cwd=image.path("/data"), env=env)
    try:
        deadline = time.monotonic() + 60  # a guard against hanging, not a measurement
        while not healthy():
            assert process.poll() is None, "the image's CMD exited"
            assert time.monotonic() < deadline, "the HEALTHCHECK never passed"
            time.sleep(0.1)
        # MSGSYNC_DATABASE_URL from the image: the database is on the volume.
        assert image.path("/data/msgsync.db").is_file()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/users", json={"user_id": "docker", "password": "in-a-box!"}
        )
        assert answer.status_code == 201
    finally:
        stop_server(process)
    assert not healthy()


def test_runtime_stage_runs_as_a_numeric_uid_with_a_volume() -> None:
    final = stages()[-1]
    (user,) = final.all("USER")
    (uid_default,) = [a.split("=")[1] for a in final.all("ARG") if a.startswith("APP_UID=")]
    assert user.replace("${APP_UID}", uid_default) == f"{uid_default}:{uid_default}"
    assert int(uid_default) > 0
    assert final.all("VOLUME") == ['["/data"]']
    assert not any("chown" in run for run in final.all("RUN"))


def test_the_image_python_is_the_one_these_tests_run_on() -> None:
    """The build steps are checked with this interpreter; the image must use the same."""
    (python,) = [a for a in stages()[0].all("ARG") if a.startswith("PYTHON_VERSION=")]
    assert python == f"PYTHON_VERSION={sys.version_info.major}.{sys.version_info.minor}"
