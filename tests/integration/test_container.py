"""The container image and the compose set-ups (docs/deploy.md).

Always (no engine needed, a few seconds): the Dockerfile read as Docker reads it (known instructions,
COPY sources that exist and reach the builder, the README's entry `python app.py`, the health check on
/onlooker/health, volumes, user, layer order; BuildKit's own parser agrees, when the `dockerfile` package is
installed), .dockerignore (the app's files in, tests, secrets and caches
out), the health-check script against a real HTTP server, every compose file's structure, the compose
specification's JSON schema (when check-jsonschema is installed), the merged set-ups (when a compose tool is
installed) and deploy/mosquitto.conf on a real Mosquitto (when installed) with the compose health check's
own command.

Opt-in (``ONLOOKER_CONTAINER_TESTS=1``: about 6 minutes the first time on 2 cores, then ~25 s): the image
is really built (CPU torch, on a Debian base made from Debian packages: ``scripts/build_base_image.sh``) and
run: the web page answers on 7860, the health check turns healthy, ``docker stop`` ends it cleanly, and a
headless run inside it comments a mounted video, records into the recordings volume and speaks with espeak-ng.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers.containers import (
    BASE_IMAGE,
    IMAGE,
    KNOWN_INSTRUCTIONS,
    ContainersUnavailable,
    DockerIgnore,
    Engine,
    Instruction,
    build_image,
    container_reason,
    engine_binary,
    ensure_base_image,
    image_size_bytes,
    parse_dockerfile,
    wait_http,
)
from tests.helpers.media import Segment, write_video
from tests.helpers.mjpeg_server import free_port
from tests.helpers.mosquitto import missing_mosquitto_reason

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
OVERRIDES = {name: ROOT / "deploy" / f"compose.{name}.yml" for name in ("vllm", "ollama", "mqtt")}
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


# --- the Dockerfile, read --------------------------------------------------------------------------------------
@functools.cache
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE)


def only(keyword: str) -> Instruction:
    found = [i for i in instructions() if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def env_of_image() -> dict[str, str]:
    """Every ENV key=value of the Dockerfile (the later wins)."""
    env: dict[str, str] = {}
    for ins in instructions():
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def test_every_instruction_is_known_and_the_base_is_a_build_argument():
    assert instructions(), "the Dockerfile has no instruction"
    unknown = [f"line {i.line}: {i.keyword}" for i in instructions() if i.keyword not in KNOWN_INSTRUCTIONS]
    assert not unknown, f"unknown Dockerfile instructions: {unknown}"
    first = instructions()[0]
    assert first.keyword == "ARG" and first.args.startswith("BASE_IMAGE=nvidia/cuda:"), first
    assert re.fullmatch(r"BASE_IMAGE=nvidia/cuda:\d+\.\d+\.\d+-[a-z-]*ubuntu\d\d\.\d\d", first.args), first.args
    assert only("FROM").args == "${BASE_IMAGE}"
    build_args = {i.args.split("=")[0] for i in instructions() if i.keyword == "ARG"}
    assert {"BASE_IMAGE", "TORCH_INDEX_URL", "TORCH_SPEC", "PIP_EXTRA_ARGS"} <= build_args


def test_dockers_own_parser_reads_the_same_instructions():
    """The PyPI package ``dockerfile`` wraps BuildKit's parser (Go): where it is installed, it must agree."""
    official = pytest.importorskip("dockerfile", reason="pip install dockerfile: BuildKit's own Dockerfile parser")
    commands = official.parse_file(str(DOCKERFILE))
    assert [(c.start_line, c.cmd.upper()) for c in commands] == [(i.line, i.keyword) for i in instructions()]
    by_keyword = {c.cmd.upper(): c for c in commands}
    assert by_keyword["CMD"].json and list(by_keyword["CMD"].value) == only("CMD").json_args()
    assert list(by_keyword["HEALTHCHECK"].value) == ["CMD", "python", "deploy/healthcheck.py"]


def test_copy_sources_exist_and_reach_the_builder():
    ignore = DockerIgnore.of(ROOT)
    copies = [i for i in instructions() if i.keyword in ("COPY", "ADD")]
    assert copies
    for ins in copies:
        flags, rest = ins.flags_and_rest()
        assert "from" not in flags, "a multi-stage COPY: this test reads one stage"
        words = ins.json_args() or shlex.split(rest)
        for source in words[:-1]:
            path = (ROOT / source).resolve()
            assert path.exists(), f"line {ins.line}: COPY source {source} does not exist"
            if path != ROOT:
                assert not ignore.excluded(source), f"line {ins.line}: {source} is left out by .dockerignore"


def test_the_build_context_holds_the_app_and_nothing_else():
    sent = set(DockerIgnore.of(ROOT).sent(ROOT))
    needed = {"app.py", "presets.yaml", "requirements.txt", "deploy/healthcheck.py", "webui/client.js"}
    needed |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "profiles").glob("*.yaml")}
    needed |= {
        p.relative_to(ROOT).as_posix()
        for folder in ("pipeline", "webui")
        for p in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert not needed - sent, f"left out of the image: {sorted(needed - sent)}"
    unwanted = [
        f
        for f in sent
        if f.startswith(("tests/", "bench/", "docs/", ".git", ".venv", "recordings/"))
        or "__pycache__" in f
        or f.endswith((".pyc", ".env"))
        or Path(f).name == ".env"
    ]
    assert not unwanted, f"sent to the builder but not needed: {unwanted}"
    for secret in (".env", "sub/.env", "bench/results/x.json", "tests/.pytest_cache/v", ".git/HEAD"):
        assert DockerIgnore.of(ROOT).excluded(secret), secret


def test_layers_put_the_requirements_before_the_source():
    order = [(i.keyword, i.args) for i in instructions()]
    copy_requirements = order.index(("COPY", "requirements.txt ./"))
    pip = next(n for n, (k, a) in enumerate(order) if k == "RUN" and "pip install" in a)
    copy_source = order.index(("COPY", ". ."))
    assert copy_requirements < pip < copy_source


def test_the_entry_is_the_readmes_and_it_serves_on_every_interface():
    cmd = only("CMD").json_args()
    assert cmd == ["python", "app.py"], only("CMD")
    assert "python app.py" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert not [i for i in instructions() if i.keyword == "ENTRYPOINT"], "CMD is meant to be replaceable whole"
    env = env_of_image()
    assert env["ONLOOKER_HOST"] == "0.0.0.0" and env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert only("EXPOSE").args == "7860" == env["ONLOOKER_PORT"]
    assert only("STOPSIGNAL").args == "SIGINT", "the app finishes its sessions on Ctrl-C, not on SIGTERM"


def test_the_model_cache_and_recordings_are_volumes_of_a_user_of_its_own():
    env = env_of_image()
    volumes = only("VOLUME").json_args()
    assert volumes is not None and {env["HF_HOME"], env["ONLOOKER_RECORD_DIR"]} <= set(volumes)
    user = only("USER").args
    assert user not in ("root", "0") and user
    useradd = next(i for i in instructions() if i.keyword == "RUN" and "useradd" in i.args)
    assert f"chown -R {user}:{user} /data" in useradd.args and all(v.startswith("/data/") for v in volumes)
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_the_health_check_asks_the_apps_health_route_with_time_to_load_a_model():
    health = only("HEALTHCHECK")
    flags, rest = health.flags_and_rest()
    assert rest.startswith("CMD ")
    command = json.loads(rest.removeprefix("CMD "))
    assert command == ["python", "deploy/healthcheck.py"]
    script = (ROOT / command[1]).read_text(encoding="utf-8")
    assert "/onlooker/health" in script
    assert '"/onlooker/health"' in (ROOT / "webui" / "app.py").read_text(encoding="utf-8")
    minutes = {"m": 1, "s": 1 / 60, "h": 60}
    period = re.fullmatch(r"(\d+)([smh])", flags["start-period"])
    assert period and int(period.group(1)) * minutes[period.group(2)] >= 5, flags


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    body = b""  # what /onlooker/health answers

    def do_GET(self):
        status = 200 if self.path == "/onlooker/health" else 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format, *args):
        pass


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONLOOKER_PORT": str(port)}
    script = ROOT / "deploy" / "healthcheck.py"
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            json.dumps({"sessions": 1, "tabs": 1, "threads": [], "backend": "stub"}).encode(),
            "healthy: stub; 1 session(s)",
        ),
        (b"ok", "healthy: ok"),  # what the route says to a visitor who has not logged in
    ],
)
def test_the_health_check_script_passes_on_an_answer_and_fails_without_one(body, said):
    handler = type("Handler", (_HealthHandler,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = run_healthcheck(server.server_address[1])
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip() == said
    finally:
        server.shutdown()
        server.server_close()
    done = run_healthcheck(free_port())  # nothing listens there
    assert done.returncode == 1 and done.stdout.startswith("unhealthy: http://127.0.0.1:"), done.stdout


# --- compose, read ---------------------------------------------------------------------------------------------
@functools.cache
def compose(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), path
    return data


def reserves_a_gpu(service: dict) -> bool:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    return any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d.get("count") for d in devices)


def healthcheck_url(service: dict) -> str:
    test = service["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL"), test
    return " ".join(test[1:])


def volume_parts(volume: str) -> tuple[str, str, str]:
    """(source, target, mode) of a short volume entry whose source may be ``${VAR:-default}``."""
    match = re.fullmatch(r"(.+):(/[^:]*)(?::(ro|rw))?", volume)
    assert match, volume
    return match.group(1), match.group(2), match.group(3) or "rw"


def test_compose_runs_onlooker_on_a_gpu_with_its_volumes():
    data = compose(COMPOSE)
    onlooker = data["services"]["onlooker"]
    assert onlooker["build"]["context"] == "."
    assert reserves_a_gpu(onlooker)
    assert onlooker["restart"] == "unless-stopped"
    assert onlooker["env_file"] == [{"path": ".env", "required": False}]
    assert onlooker["environment"]["ONLOOKER_HOST"] == "0.0.0.0"
    assert str(onlooker["environment"]["ONLOOKER_PORT"]) == "7860"
    assert [p.rsplit(":", 1)[1] for p in onlooker["ports"]] == ["7860"]
    targets = dict(reversed(volume_parts(v)[:2]) for v in onlooker["volumes"])
    env = env_of_image()
    assert set(targets) == {env["HF_HOME"], env["ONLOOKER_RECORD_DIR"]}
    named = {re.sub(r"\$\{\w+:-(\w+)\}", r"\1", source) for source in targets.values()}
    assert named <= set(data["volumes"]), "each default volume is declared"
    assert "profiles" not in onlooker, "the default set-up is `docker compose up -d`"
    assert onlooker.get("init") is True


def test_vllm_setup_waits_for_a_healthy_server_and_points_onlooker_at_it():
    services = compose(OVERRIDES["vllm"])["services"]
    vllm = services["vllm"]
    assert vllm["image"].startswith("${VLLM_IMAGE:-vllm/vllm-openai:v")
    assert reserves_a_gpu(vllm)
    assert "http://127.0.0.1:8000/health" in healthcheck_url(vllm)
    assert "--model" in vllm["command"]
    model = vllm["command"][vllm["command"].index("--model") + 1]
    env = services["onlooker"]["environment"]
    assert env["ONLOOKER_BASE_URL"] == "http://vllm:8000/v1" and env["ONLOOKER_MODEL"] == model
    assert services["onlooker"]["depends_on"] == {"vllm": {"condition": "service_healthy"}}
    limit = json.loads(vllm["command"][vllm["command"].index("--limit-mm-per-prompt") + 1])
    presets = yaml.safe_load((ROOT / "presets.yaml").read_text(encoding="utf-8"))["presets"]
    most_frames = max(int(preset.get("max_frames", 1)) for preset in presets.values())
    assert limit["image"] >= most_frames, "vLLM must take a preset's whole window in one request"


def test_ollama_setup_pulls_the_model_before_onlooker_starts():
    services = compose(OVERRIDES["ollama"])["services"]
    assert healthcheck_url(services["ollama"]) == "ollama list"
    pull = services["ollama-pull"]
    assert pull["depends_on"] == {"ollama": {"condition": "service_healthy"}}
    assert pull["command"][0] == "pull" and pull["environment"]["OLLAMA_HOST"] == "http://ollama:11434"
    env = services["onlooker"]["environment"]
    assert env["ONLOOKER_BASE_URL"] == "http://ollama:11434/v1" and env["ONLOOKER_MODEL"] == pull["command"][1]
    assert services["onlooker"]["depends_on"] == {"ollama-pull": {"condition": "service_completed_successfully"}}


def test_mqtt_setup_mounts_its_config_and_points_onlooker_at_the_broker():
    services = compose(OVERRIDES["mqtt"])["services"]
    broker = services["mosquitto"]
    config = next(volume_parts(v) for v in broker["volumes"] if "/mosquitto/config/" in v)
    assert config[1:] == ("/mosquitto/config/mosquitto.conf", "ro")
    assert (ROOT / config[0]).is_file(), "paths of an override are relative to the first file's folder"
    assert broker["ports"] == ["${MQTT_PUBLISH:-127.0.0.1:1883}:1883"]
    assert "mosquitto_sub" in healthcheck_url(broker)
    assert services["onlooker"]["environment"]["ONLOOKER_MQTT"] == "${ONLOOKER_MQTT:-mqtt://mosquitto:1883}"
    assert services["onlooker"]["depends_on"] == {"mosquitto": {"condition": "service_healthy"}}


def test_every_sidecar_has_a_health_check_and_a_restart_policy():
    for path in OVERRIDES.values():
        for name, service in compose(path)["services"].items():
            if name == "onlooker":
                assert set(service) <= {"environment", "depends_on"}, f"{path.name} changes only the wiring"
                continue
            if name.endswith("-pull"):
                assert service["restart"] == "no"
                continue
            assert "healthcheck" in service and service["restart"] == "unless-stopped", (path.name, name)


def documented_commands() -> list[str]:
    texts = [COMPOSE.read_text(encoding="utf-8"), *(p.read_text(encoding="utf-8") for p in OVERRIDES.values())]
    if DEPLOY_DOC.is_file():
        texts.append(DEPLOY_DOC.read_text(encoding="utf-8"))
    return [m for text in texts for m in re.findall(r"docker compose (?:-f \S+ )+up -d", text)]


def test_each_documented_command_names_files_that_exist():
    commands = documented_commands()
    assert len(commands) >= 3
    for command in commands:
        files = re.findall(r"-f (\S+)", command)
        assert files[0] == "docker-compose.yml", command
        for name in files:
            assert (ROOT / name).is_file(), command
    for path in OVERRIDES.values():
        assert any(path.relative_to(ROOT).as_posix() in c for c in commands), f"no documented command uses {path}"


def compose_schema() -> dict:
    check_jsonschema = pytest.importorskip(
        "check_jsonschema", reason="check-jsonschema (pip) carries the compose specification's JSON schema"
    )
    path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", [COMPOSE, *OVERRIDES.values()], ids=lambda p: p.name)
def test_compose_files_follow_the_compose_specification(path):
    import jsonschema

    schema = compose_schema()
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose(path)), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def compose_tool() -> list[str] | None:
    """`docker compose` when a Docker Compose v2+ plugin is there, else a podman-compose that has `config`
    and `--env-file` (1.1+; Debian 12 packages 1.0.3, which has neither: pip install podman-compose)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    podman_compose = shutil.which("podman-compose")
    if podman_compose is None:
        return None
    usage = subprocess.run([podman_compose, "--help"], capture_output=True, text=True, timeout=30).stdout
    return [podman_compose] if "config" in usage and "--env-file" in usage else None


@pytest.mark.parametrize("setup", ["default", *OVERRIDES])
def test_compose_tool_merges_each_setup(setup):
    tool = compose_tool()
    if tool is None:
        pytest.skip("neither `docker compose` nor podman-compose 1.1+ is installed (pip install podman-compose)")
    files = ["-f", COMPOSE.name] + ([] if setup == "default" else ["-f", OVERRIDES[setup].relative_to(ROOT).as_posix()])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONLOOKER_", "VLLM_", "OLLAMA_", "MQTT_"))}
    # as documented: from the repository root; no .env of a developer's decides the answer
    done = subprocess.run(
        [*tool, "--env-file", os.devnull, *files, "config"],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)
    onlooker = merged["services"]["onlooker"]
    environment = onlooker["environment"]
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    assert environment["ONLOOKER_HOST"] == "0.0.0.0"
    expected = {
        "default": ("ONLOOKER_MODEL", "Qwen/Qwen2-VL-2B-Instruct"),
        "vllm": ("ONLOOKER_BASE_URL", "http://vllm:8000/v1"),
        "ollama": ("ONLOOKER_BASE_URL", "http://ollama:11434/v1"),
        "mqtt": ("ONLOOKER_MQTT", "mqtt://mosquitto:1883"),
    }[setup]
    assert environment[expected[0]] == expected[1], environment
    services = {"onlooker"} | (set(compose(OVERRIDES[setup])["services"]) if setup != "default" else set())
    assert set(merged["services"]) == services


@pytest.mark.skipif(missing_mosquitto_reason() is not None, reason=missing_mosquitto_reason() or "")
def test_mosquitto_conf_serves_and_the_compose_health_check_passes(tmp_path):
    """The set-up's own config on a real broker (only its port and data folder moved for the test), asked the way
    the compose health check asks."""
    port = free_port()
    # started as root, mosquitto drops to its own user, which must reach and write its data folder
    data = Path(tempfile.mkdtemp(prefix="onlooker-mosquitto-"))
    data.chmod(0o777)
    conf = (ROOT / "deploy" / "mosquitto.conf").read_text(encoding="utf-8")
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1").replace("/mosquitto/data/", f"{data}/")
    (tmp_path / "mosquitto.conf").write_text(conf, encoding="utf-8")
    broker = subprocess.Popen(
        ["/usr/sbin/mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        test = compose(OVERRIDES["mqtt"])["services"]["mosquitto"]["healthcheck"]["test"][1:]
        test = [word.replace("$$", "$") for word in test] + ["-p", str(port)]
        deadline = time.monotonic() + 10
        while True:
            done = subprocess.run(test, capture_output=True, text=True, timeout=15)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert done.returncode == 0, done.stderr
        assert re.fullmatch(r"\d+ seconds", done.stdout.strip()), done.stdout
        broker.terminate()
        log, _ = broker.communicate(timeout=10)
        assert (data / "mosquitto.db").is_file(), f"persistence writes into the data volume: {log}"
    finally:
        if broker.poll() is None:
            broker.kill()
            broker.wait(timeout=10)
        shutil.rmtree(data, ignore_errors=True)


# --- the image, built and run (opt-in) ---------------------------------------------------------------------------
needs_containers = pytest.mark.skipif(container_reason() is not None, reason=container_reason() or "")
# the first test also makes the base image and builds the image (~6 minutes on 2 cores): past the suite's 300 s
builds_the_image = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def engine() -> Engine:
    try:
        seconds = ensure_base_image(Engine(engine_binary() or "podman"))
        found = Engine.find(BASE_IMAGE)
    except ContainersUnavailable as exc:
        pytest.skip(str(exc))
    print(f"\nbase image ready in {seconds:.0f} s; engine flags: {found.global_args + found.limit_args}")
    return found


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    seconds = build_image(engine)
    print(f"\nimage {IMAGE} built in {seconds:.0f} s, {image_size_bytes(engine, IMAGE) / 1e9:.2f} GB")
    return IMAGE


@pytest.fixture
def start_container(engine: Engine, image: str) -> Iterator[Callable[..., tuple[str, int]]]:
    """Starts the image's web app (``-e`` options as given) on a free loopback port; removed after the test."""
    names: list[str] = []

    def start(*options: str) -> tuple[str, int]:
        name = f"onlooker-test-{uuid.uuid4().hex[:8]}"
        port = free_port()
        engine.run("run", "-d", "--name", name, *engine.limit_args, "-p", f"127.0.0.1:{port}:7860", *options, image)
        names.append(name)
        return name, port

    yield start
    for name in names:
        logs = engine.run("logs", name, check=False)
        print(f"\n--- logs of {name}:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        engine.run("rm", "-f", "-v", name, check=False)  # -v: its anonymous volumes too


def wait_healthy(engine: Engine, name: str, timeout: float = 120) -> str:
    """Runs the image's health check until it passes; returns its last output."""
    deadline = time.monotonic() + timeout
    while not (healthy := engine.healthy(name))[0] and time.monotonic() < deadline:
        time.sleep(1)
    assert healthy[0], f"the health check did not turn healthy: {healthy[1]}"
    return healthy[1]


@needs_containers
@builds_the_image
def test_image_holds_what_dockerignore_lets_through(engine, image):
    listed = engine.run("run", "--rm", *engine.limit_args, image, "find", "/app", "-type", "f").stdout.split()
    in_image = sorted(path.removeprefix("/app/") for path in listed)
    assert in_image == DockerIgnore.of(ROOT).sent(ROOT), "the .dockerignore reading here differs from the builder's"


@needs_containers
@builds_the_image
def test_web_app_serves_turns_healthy_and_stops_cleanly(engine, start_container):
    start = time.monotonic()
    name, port = start_container()
    status, body = wait_http(f"http://127.0.0.1:{port}/onlooker/health", timeout=180)
    print(f"\nthe app answered {time.monotonic() - start:.1f} s after `run`")
    assert status == 200 and json.loads(body)["sessions"] == 0
    status, page = wait_http(f"http://127.0.0.1:{port}/", timeout=10)
    assert status == 200 and b"gradio" in page.lower()
    assert wait_healthy(engine, name).startswith("healthy: OpenCV narrator")
    user = engine.run("exec", name, "id", "-u").stdout.strip()
    assert user == "10001"
    start = time.monotonic()
    engine.run("stop", "-t", "30", name)
    stopped = time.monotonic() - start
    state = json.loads(engine.run("inspect", name, "--format", "{{json .State}}").stdout)
    assert state["ExitCode"] == 0 and stopped < 10, f"stopped in {stopped:.1f} s with exit code {state['ExitCode']}"
    logs = engine.run("logs", name).stdout + engine.run("logs", name).stderr
    # Gradio's own words on Ctrl-C, or the app's own when it handles the signal itself
    assert "· ready: " in logs and ("Keyboard interruption" in logs or "· stopped (SIGINT)" in logs), logs


@needs_containers
@builds_the_image
def test_health_check_passes_behind_the_login(engine, start_container):
    """With ONLOOKER_AUTH (what a published container should have) the page asks for the login, and the health
    route, left open by the app's login gate, still tells the engine the app is up."""
    name, port = start_container("-e", "ONLOOKER_AUTH=tester:a-long-test-password")
    status, _ = wait_http(f"http://127.0.0.1:{port}/onlooker/health", timeout=180)
    assert status == 200
    status, _ = wait_http(f"http://127.0.0.1:{port}/gradio_api/info", timeout=10, status=None)
    assert status == 401, "the app's API needs the login"
    assert wait_healthy(engine, name).startswith("healthy: ")


@needs_containers
@builds_the_image
def test_headless_run_in_the_container_comments_records_and_speaks(engine, image, tmp_path):
    media = tmp_path / "media"
    out = tmp_path / "out"
    recordings = tmp_path / "recordings"
    media.mkdir()
    for folder in (out, recordings):
        folder.mkdir()
        folder.chmod(0o777)  # the image's user (uid 10001) writes there
    write_video(media / "clip.mp4", [Segment(2, 0), Segment(2, 1, moving=True), Segment(2, 2)])
    done = engine.run(
        "run", "--rm", *engine.limit_args,
        "-v", f"{media}:/media:ro", "-v", f"{out}:/out", "-v", f"{recordings}:/data/recordings",
        image, "python", "app.py", "--headless", "--source", "/media/clip.mp4", "--events", "/out/events.jsonl",
        "--tts", "espeak", "--audio-out", "/out/narration.wav",
        timeout=300,
    )  # fmt: skip
    events = [json.loads(line) for line in (out / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    kinds = [event["type"] for event in events]
    assert kinds[0] == "camera_start" and kinds.count("scene_cut") == 2, kinds
    assert kinds.count("commentary_end") >= 2, kinds
    sessions = [p for p in recordings.iterdir() if p.is_dir()]
    assert len(sessions) == 1 and (sessions[0] / "session.json").is_file(), done.stderr
    assert (recordings / "history.sqlite3").is_file()
    with wave.open(str(out / "narration.wav")) as narration:
        assert narration.getframerate() == 24000
        samples = narration.readframes(narration.getnframes())
    assert any(samples), "espeak-ng said nothing"
