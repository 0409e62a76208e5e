"""The container image for tests: reading the Dockerfile and .dockerignore as Docker does, and a container engine
that really builds and runs the image here, when one can.

Reading (no engine needed): ``parse_dockerfile`` splits the Dockerfile into instructions the way Docker's parser
does (parser directives, comments, ``\\`` continuations, JSON or shell form); ``DockerIgnore`` answers whether
a path of the build context reaches the builder (Docker's rules: ``*``, ``?``, ``**``, ``!`` exceptions, the last
matching line wins, a directory's rule covers what is under it).

Running (opt-in, ``ONLOOKER_CONTAINER_TESTS=1``): ``container_reason()`` says why nothing can run (not asked
for, no engine, the engine's daemon or storage does not answer), for ``pytest.mark.skipif``. ``Engine.find()``
then tries ``true`` in the base image with the flags some hosts need and keeps the first set that runs:
inside a VM or container whose process limits cannot be raised (no CAP_SYS_RESOURCE), podman's default
limits for a container (1048576 files, 4194304 processes) fail with ``setrlimit … Operation not permitted``
and need ``--ulimit`` at this process's own limits; with cgroup v1 and an empty cgroup v2 mounted beside it
("hybrid"), crun refuses (``cgroups in hybrid mode not supported``) and runc works. The base image comes from
``scripts/build_base_image.sh`` (Debian packages through mmdebstrap, the tarball cached in
``~/.cache/onlooker/container``), the image from the project's Dockerfile on that base, with the CPU build of
torch and this machine's own pip set-up (its index, find-links folders and CA bundle, mounted read-only into
the build where they are local). The layers stay in the engine's storage, so a second run rebuilds only what
changed.

Timings on the dev machine (2 cores, podman 4.3): the base image 83-99 s once (then 0 s), the image 167-246 s
the first time (2.1 GB of Python packages from PyPI), ~150 s after requirements.txt changes, ~2 s when only the
source changed; the app answers on its port 3-9 s after ``podman run``. (The build's bind mounts leave their
empty mount points, /opt/wheels and the like, in the test image.)
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPT_IN = "ONLOOKER_CONTAINER_TESTS"
BASE_IMAGE = "localhost/onlooker-base:bookworm"
IMAGE = "localhost/onlooker:test"

# Every instruction Docker's Dockerfile frontend knows (ONBUILD takes another one after it).
KNOWN_INSTRUCTIONS = frozenset(
    {
        *("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL"),
        *("MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"),
    }
)


# --- reading the Dockerfile ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the line, continuations joined
    line: int  # where it starts (1-based)

    def json_args(self) -> list[str] | None:
        """The arguments in JSON (exec) form, or None for the shell form."""
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """Leading ``--name=value`` flags (COPY --chown=…, HEALTHCHECK --interval=…) and what follows them."""
        flags: dict[str, str] = {}
        rest = self.args
        while match := re.match(r"--([a-z-]+)(?:=(\S*))?\s+", rest):
            flags[match.group(1)] = match.group(2) or ""
            rest = rest[match.end() :]
        return flags, rest


def parse_dockerfile(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, as Docker's parser reads them (with the default ``\\`` escape)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    instructions: list[Instruction] = []
    index = 0
    # parser directives (``# syntax=…``, ``# escape=…``) may only open the file; they are comments to us
    while index < len(lines) and re.match(r"#\s*\w+\s*=", lines[index]):
        index += 1
    while index < len(lines):
        raw = lines[index]
        start = index + 1
        index += 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = [raw]
        while parts[-1].rstrip().endswith("\\"):
            parts[-1] = parts[-1].rstrip()[:-1]
            # comment and empty lines inside a continuation are dropped, as Docker does
            while index < len(lines) and (not lines[index].strip() or lines[index].lstrip().startswith("#")):
                index += 1
            if index == len(lines):
                break
            parts.append(lines[index])
            index += 1
        text = " ".join(part.strip() for part in parts)
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    return instructions


# --- reading .dockerignore ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    exception: bool


class DockerIgnore:
    """Docker's .dockerignore rules over paths relative to the build context (``pipeline/hub.py``)."""

    def __init__(self, text: str) -> None:
        self.rules: list[_Rule] = []
        for line in text.splitlines():
            pattern = line.strip()
            if not pattern or pattern.startswith("#"):
                continue
            exception = pattern.startswith("!")
            pattern = os.path.normpath(pattern.lstrip("!").strip()).lstrip("/")
            self.rules.append(_Rule(re.compile(_glob_to_regex(pattern)), exception))

    @classmethod
    def of(cls, context: Path) -> DockerIgnore:
        path = context / ".dockerignore"
        return cls(path.read_text(encoding="utf-8") if path.is_file() else "")

    def excluded(self, relpath: str) -> bool:
        """Whether the file or folder at ``relpath`` stays out of the build context."""
        parts = Path(relpath).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for rule in self.rules:
            # a rule that names a folder covers everything under it
            if any(rule.regex.fullmatch(prefix) for prefix in prefixes):
                verdict = not rule.exception
        return verdict

    def sent(self, context: Path) -> list[str]:
        """The files of ``context`` that the builder gets (``.git`` is never walked: it is always excluded here)."""
        files = []
        for folder, dirs, names in os.walk(context):
            rel_folder = Path(folder).relative_to(context)
            dirs[:] = [d for d in dirs if d != ".git"]
            for name in names:
                rel = (rel_folder / name).as_posix()
                if not self.excluded(rel):
                    files.append(rel)
        return sorted(files)


def _glob_to_regex(pattern: str) -> str:
    """Go's filepath.Match syntax plus ``**`` (any number of folders), as Docker's patternmatcher reads it."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" : zero or more folders
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out.append(f"[{'^' + body[1:] if body.startswith('^') else body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


# --- a container engine that runs here ----------------------------------------------------------------------
def _command_output(cmd: Sequence[str], timeout: float = 60) -> tuple[int, str]:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def engine_binary() -> str | None:
    """CONTAINER_ENGINE (podman or docker) when set, else podman when installed (it needs no daemon), else docker."""
    chosen = os.environ.get("CONTAINER_ENGINE")
    if chosen:
        return shutil.which(chosen)
    return shutil.which("podman") or shutil.which("docker")


def container_reason() -> str | None:
    """Why the container tests cannot run here (None: they can try), for ``pytest.mark.skipif``."""
    if os.environ.get(OPT_IN) != "1":
        return (
            f"the container tests build a 2.8 GB image (about 6 minutes the first time on 2 cores): set {OPT_IN}=1 "
            "to run them (podman or Docker; docs/deploy.md)"
        )
    binary = engine_binary()
    if binary is None:
        return "no container engine: apt-get install podman runc mmdebstrap (or Docker), or CONTAINER_ENGINE is wrong"
    code, out = _command_output([binary, "info"])
    if code != 0:
        return f"`{Path(binary).name} info` failed: {_last_line(out)}"
    if shutil.which("mmdebstrap") is None:
        code, _ = _command_output([binary, "image", "inspect", BASE_IMAGE])
        if code != 0:
            return "mmdebstrap is missing (apt-get install mmdebstrap): it makes the base image from Debian packages"
    return None


class ContainersUnavailable(RuntimeError):
    """No set of flags ran a container here; the message holds each try and its error."""


@dataclass
class Engine:
    """A container engine and the flags that make it run containers on this host."""

    binary: str
    global_args: list[str] = field(default_factory=list)  # before the subcommand: podman --runtime runc …
    limit_args: list[str] = field(default_factory=list)  # for run and build: --ulimit …

    @property
    def podman(self) -> bool:
        return Path(self.binary).name == "podman"

    def command(self, *args: str) -> list[str]:
        return [self.binary, *self.global_args, *args]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(self.command(*args))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    @classmethod
    def find(cls, image: str) -> Engine:
        """The first set of flags with which ``true`` runs in ``image`` here."""
        binary = engine_binary()
        if binary is None:
            raise ContainersUnavailable("no container engine")
        candidates = [cls(binary)]
        if Path(binary).name == "podman":
            limits = _limit_args()
            candidates.append(cls(binary, [], limits))
            if shutil.which("runc"):
                candidates += [cls(binary, ["--runtime", "runc"], limits), cls(binary, ["--runtime", "runc"])]
        errors = []
        for engine in candidates:
            done = engine.run("run", "--rm", *engine.limit_args, image, "true", timeout=120, check=False)
            if done.returncode == 0:
                return engine
            errors.append(
                f"{' '.join(engine.command('run', '--rm', *engine.limit_args, image, 'true'))}: "
                f"{_last_line(_without_systemd_noise(done.stderr))}"
            )
        raise ContainersUnavailable("no container could run here:\n" + "\n".join(errors))

    def healthy(self, name: str) -> tuple[bool, str]:
        """Run the image's health check now and say whether the container counts as healthy, with its output.
        podman runs checks from systemd timers, absent in many containers and CI machines, so it is run here
        (``podman healthcheck run``); Docker runs them itself, so its state is read."""
        if self.podman:
            done = self.run("healthcheck", "run", name, check=False)
            state = self.run("inspect", name, "--format", "{{json .State}}").stdout
            health = json.loads(state).get("Health") or json.loads(state).get("Healthcheck") or {}
            log = (health.get("Log") or [{}])[-1]
            return done.returncode == 0 and health.get("Status") == "healthy", str(log.get("Output", done.stdout))
        state = json.loads(self.run("inspect", name, "--format", "{{json .State}}").stdout)
        health = state.get("Health") or {}
        log = (health.get("Log") or [{}])[-1]
        return health.get("Status") == "healthy", str(log.get("Output", ""))


def _limit_args() -> list[str]:
    """``--ulimit`` at this process's own hard limits (podman itself caps processes at 32768)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def _without_systemd_noise(text: str) -> str:
    """podman's complaints that it cannot set up health-check timers without systemd (harmless here)."""
    return "\n".join(line for line in text.splitlines() if "systemd" not in line)


# --- building ---------------------------------------------------------------------------------------------------
def ensure_base_image(engine: Engine, image: str = BASE_IMAGE) -> float:
    """``scripts/build_base_image.sh`` (a no-op when the image is there); returns the seconds it took."""
    start = time.monotonic()
    env = {**os.environ, "CONTAINER_ENGINE": engine.binary}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_base_image.sh"), image], capture_output=True, text=True, env=env,
        timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"scripts/build_base_image.sh failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def host_pip_options() -> tuple[list[str], list[str]]:
    """This machine's pip set-up as (pip options, bind mounts for the build): its index and extra indexes, its
    find-links folders and its CA bundle (a proxy's certificate), from ``pip config list`` (which includes the
    PIP_* variables). Local folders and files are mounted read-only at the same path; a ``file://…/simple``
    index brings its parent folder, where its pages point."""
    code, out = _command_output([os.environ.get("PYTHON", "python3"), "-m", "pip", "config", "list"])
    found: dict[str, tuple[int, str]] = {}
    rank = {":env:": 3, "site": 2, "user": 1, "global": 0}
    for line in out.splitlines() if code == 0 else []:
        match = re.match(r"([^.]+)\.([\w-]+)='(.*)'$", line.strip())
        if match and match.group(2) in ("index-url", "extra-index-url", "find-links", "cert", "trusted-host"):
            scope, key, value = match.groups()
            if rank.get(scope, 0) >= found.get(key, (-1, ""))[0]:
                found[key] = (rank.get(scope, 0), value)
    options: list[str] = []
    mounts: list[str] = []

    def mount(path: str) -> None:
        local = Path(path)
        if local.name == "simple":
            local = local.parent
        if local.exists() and f"{local}:{local}:ro" not in mounts:
            mounts.extend(["-v", f"{local}:{local}:ro"])

    for key, (_, value) in sorted(found.items()):
        for item in value.split():
            if key == "cert" or not re.match(r"[a-z+]+://", item) or item.startswith("file://"):
                path = item.removeprefix("file://")
                if not Path(path).exists():
                    continue
                mount(path)
            options.append(f"--{key}={item}")
    return options, mounts


def build_image(engine: Engine, base: str = BASE_IMAGE, tag: str = IMAGE) -> float:
    """The project's Dockerfile on ``base`` (CPU torch through this machine's pip set-up); returns seconds."""
    pip_options, mounts = host_pip_options()
    args = ["build", "--network", "host", "-t", tag, "--build-arg", f"BASE_IMAGE={base}"]
    if engine.podman:
        # podman writes OCI images by default, which have no HEALTHCHECK; a build runs containers like `run`
        args += ["--format", "docker", *engine.limit_args, *mounts]
    else:
        pip_options = [option for option in pip_options if "://" in option and "file://" not in option]
    args += ["--build-arg", f"PIP_EXTRA_ARGS={' '.join(pip_options)}", str(ROOT)]
    start = time.monotonic()
    engine.run(*args, timeout=3600)
    return time.monotonic() - start


def image_size_bytes(engine: Engine, image: str) -> int:
    return int(engine.run("image", "inspect", image, "--format", "{{.Size}}").stdout.strip())


# --- waiting ---------------------------------------------------------------------------------------------------
def wait_http(url: str, timeout: float, status: int | None = 200) -> tuple[int, bytes]:
    """Poll ``url`` until it answers with ``status`` (None: any HTTP status), with a deadline; returns (status,
    body). The app's own routes come a moment after Gradio's server: a 404 first is normal."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as reply:
                answer = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            answer = exc.code, exc.read()
        except OSError as exc:
            last = exc
            time.sleep(0.3)
            continue
        if status is None or answer[0] == status:
            return answer
        last = f"HTTP {answer[0]}"
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer {status or ''} within {timeout:.0f} s ({last})")
