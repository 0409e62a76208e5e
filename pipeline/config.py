"""Settings from CLI flags, ``ONLOOKER_*`` env vars, the settings file and ``.env``; presets from ``presets.yaml``.

Everything is validated once, here at the edge; errors name the file or variable, the key and
what is allowed, so a typo never surfaces later as a confusing failure deep in the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.errors import ConfigError
from pipeline.settings_file import SettingsFileSource, holding_file, shown_path
from pipeline.watch.rules import RuleDefaults, split_rules

ROOT = Path(__file__).resolve().parent.parent
PRESETS_FILE = ROOT / "presets.yaml"
PROFILES_DIR = ROOT / "profiles"


M = TypeVar("M", bound=BaseModel)


class Tuning(BaseModel):
    """How often to look, how much to show the model and how talkative to be (one preset)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    capture_fps: float = Field(1.0, gt=0, le=30, description="frames per second into the window")
    window: int = Field(16, ge=1, le=128, description="frames kept in the sliding window")
    stride: int = Field(2, ge=1, le=32, description="send every n-th window frame to the model")
    max_frames: int = Field(8, ge=1, le=64, description="most frames in one request")
    max_tokens: int = Field(60, ge=4, le=1024, description="token cap per comment")
    active_interval: float = Field(4.0, gt=0, le=600, description="seconds between comments when ACTIVE and calm")
    min_interval: float = Field(1.5, ge=0, le=600, description="shortest gap between comments")
    density: float = Field(1.0, ge=0, le=10, description="how much scene weight shortens the interval")
    heartbeat: float = Field(30.0, ge=0, le=3600, description="seconds between comments when IDLE; 0 = silent")
    idle_after: float = Field(3.0, gt=0, le=600, description="seconds of stillness before IDLE")
    motion_threshold: float = Field(
        0.005, ge=0, le=1, description="share of the picture changing per 1/15 s that means ACTIVE"
    )
    cut_threshold: float = Field(0.45, gt=0, le=1, description="change score that counts as a hard cut")
    comment_on_cut: bool = Field(True, description="comment right away after a scene cut")
    context_comments: int = Field(3, ge=0, le=20, description="recent comments carried into the prompt")
    duplicate_similarity: float = Field(0.85, gt=0, le=1, description="similarity that suppresses a comment")
    scene_fps: float = Field(15.0, ge=1, le=120, description="most frames per second scored for cuts")


class PresetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: str
    presets: dict[str, Tuning]


def describe_validation_error(err: ValidationError, where: str, model: type[BaseModel]) -> str:
    """One line per problem: ``where: key: message``; unknown keys list the allowed ones."""
    lines = []
    for problem in err.errors():
        loc = problem["loc"]
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = problem["msg"]
        if problem["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            msg = "unknown key" + (f"; allowed keys: {', '.join(owner.model_fields)}" if owner else "")
        lines.append(f"{where}: {key}: {msg}")
    return "\n".join(lines)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The nested model that a validation location points into (through dict values)."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[str(part)].annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def load_yaml_model(path: Path, model: type[M]) -> M:
    """Parse a YAML file into ``model``; any problem becomes a ConfigError naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path), model)) from None


def load_presets(path: Path = PRESETS_FILE) -> PresetFile:
    presets = load_yaml_model(path, PresetFile)
    if presets.default not in presets.presets:
        raise ConfigError(
            f"{path}: default: '{presets.default}' is not a preset; allowed: {', '.join(presets.presets)}"
        )
    return presets


def pick(name: str | None, choices: dict[str, M], what: str, where: str | Callable[[], str]) -> M:
    """Look ``name`` up case-insensitively; an unknown name lists the allowed ones, after ``where`` (a callable is
    asked only then: ``Settings.where`` reads the settings file)."""
    key = (name or "").strip().lower()
    if key not in choices:
        place = where() if callable(where) else where
        raise ConfigError(f"{place}: unknown {what} '{name}'; allowed: {', '.join(sorted(choices))}")
    return choices[key]


class Settings(BaseSettings):
    """Every knob of a run. CLI flag ``--foo-bar`` ↔ env var ``ONLOOKER_FOO_BAR`` ↔ settings file key ``foo_bar`` ↔
    ``.env`` line."""

    model_config = SettingsConfigDict(env_prefix="ONLOOKER_", env_file=".env", extra="ignore", frozen=True)

    headless: bool = Field(False, description="no web UI: print commentary to stdout (needs --source)")
    source: str | None = Field(None, description="video file path or URL")
    backend: str = Field("auto", description="auto, opencv, transformers, minicpm or openai")
    model: str | None = Field(None, description="hub id or local path of the model")
    base_url: str | None = Field(None, description="OpenAI-compatible server URL")
    api_key: str | None = Field(None, description="API key for the OpenAI-compatible server")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto, cpu, cuda, cuda:N or mps")
    preset: str | None = Field(None, description="preset name from presets.yaml")
    profile: str = Field("narrator", description="profile name from profiles/")
    instructions: str = Field("", description="standing instruction added to every prompt")
    loop: bool = Field(False, description="replay a video file forever")
    events: Path | None = Field(None, description="write every event as JSON Lines to this file")
    capture_fps: float | None = Field(None, gt=0, le=30, description="override the preset's capture rate")
    window: int | None = Field(None, ge=1, le=128, description="override the preset's window size")
    stride: int | None = Field(None, ge=1, le=32, description="override the preset's frame stride")
    max_tokens: int | None = Field(None, ge=4, le=1024, description="override the preset's token cap")
    token_timeout: float = Field(60.0, gt=0, description="seconds to wait for the next token before failing")
    first_token_timeout: float = Field(
        30.0, gt=0, description="openai: seconds to wait for the first token of a comment before failing"
    )
    jpeg_quality: int = Field(80, ge=30, le=100, description="openai: JPEG quality of the frames sent")
    image_max_side: int = Field(768, ge=64, le=4096, description="openai: longest side of the frames sent, pixels")
    max_in_flight: int = Field(
        4, ge=1, le=256, description="openai: requests at once over all cameras and tabs (the scheduler)"
    )
    send_video: bool = Field(False, description="openai: send the frames as one video_url part (vLLM)")
    retries: int = Field(2, ge=0, le=10, description="openai: retries (with backoff) of a failed request")
    second_opinion_url: str | None = Field(
        None, description="OpenAI-compatible server of a text model that gets the comments for a second opinion"
    )
    second_opinion_model: str | None = Field(None, description="model name for the second opinion")
    second_opinion_task: str = Field(
        "summary",
        description="what the second model does with the comments: summary, alert, translate:LANG or a prompt",
    )
    second_opinion_every: int = Field(5, ge=1, le=1000, description="ask for a second opinion every N comments")
    precision: str = Field(
        "auto",
        pattern=r"^(auto|bf16|int4)$",
        description="minicpm: auto (INT4 when free VRAM is below what BF16 needs), bf16 or int4",
    )
    vision_only: bool = Field(False, description="minicpm: load MiniCPM-o without audio and TTS (less VRAM, faster)")
    attn: str = Field(
        "auto", pattern=r"^(auto|sdpa|flash_attention_2|eager)$", description="attention kernel: auto, sdpa, ..."
    )
    compile: bool = Field(False, description="torch.compile the language model (slow warm-up, faster comments)")
    max_slice_nums: int = Field(1, ge=1, le=9, description="minicpm: image slices per frame (1 = fastest)")
    incremental_prefill: bool = Field(
        True,
        description="minicpm, transformers: prefill each frame once into a kept KV cache instead of per comment",
    )
    host: str = Field("127.0.0.1", description="web UI: address to listen on (0.0.0.0 for the whole network)")
    port: int = Field(7860, ge=1, le=65535, description="web UI: port to listen on")
    share: bool = Field(False, description="web UI: also publish a temporary public Gradio share link")
    auth: str | None = Field(
        None,
        pattern=r"^[^:,]+:[^,]+(,[^:,]+:[^,]+)*$",
        description="web UI: require login, as user:password (several: u1:p1,u2:p2; each sees only their own history)",
    )
    live_sync: bool = Field(True, description="web UI: delay the live picture by the commentary latency")
    source_kind: str | None = Field(
        None,
        pattern=r"^(webcam|upload|url)$",
        description="web UI: the source the page starts with: webcam, upload or url (default: url with --source, "
        "else upload)",
    )
    mute: bool = Field(False, description="web UI: start with the speech muted")
    max_upload_mb: int = Field(
        2048, ge=0, description="web UI: largest video file a visitor may upload (MB); 0 = no limit"
    )
    max_upload_minutes: float = Field(
        180.0, ge=0, description="web UI: longest video a visitor may upload (minutes); 0 = no limit"
    )
    max_sessions: int = Field(
        8,
        ge=1,
        le=1000,
        description="web UI: live sessions at once, over all tabs and visitors; with several logins, one login may "
        "run at most half of them (rounded up)",
    )
    rtsp_transport: str = Field(
        "tcp",
        pattern=r"^(tcp|udp)$",
        description="RTSP cameras: tcp (works through NAT and firewalls, no lost packets) or udp (some cameras "
        "only offer it; lowest delay on a clean network)",
    )
    allow_hosts: str = Field(
        "",
        description="web UI, when shared: private hosts visitors may open (your cameras), comma-separated: "
        "cam.local, 192.168.1.0/24, 10.0.0.5:554",
    )
    tts: str = Field(
        "auto",
        pattern=r"^(auto|model|espeak|openai|none)$",
        description="speech engine: auto (the model's own voice, else espeak), model, espeak, openai or none",
    )
    tts_voice: str | None = Field(None, description="voice name for the speech engine (default: the profile's)")
    tts_url: str | None = Field(None, description="OpenAI-compatible speech server URL, e.g. http://localhost:8880/v1")
    tts_model: str = Field("tts-1", description="model name sent to the OpenAI-compatible speech server")
    tts_api_key: str | None = Field(None, description="API key for the OpenAI-compatible speech server")
    speech_pause: float = Field(0.3, ge=0, le=5, description="breathing pause between spoken comments (s)")
    speech_max_wait: float = Field(
        4.0, gt=0, le=60, description="drop a comment's speech that waited longer than this to be spoken (s)"
    )
    stt_model: str | None = Field(
        None, description="faster-whisper model (name in the local cache, or folder) for voice instructions"
    )
    audio_out: Path | None = Field(None, description="headless: write the narration as one WAV on the media timeline")
    record: bool = Field(
        True, description="keep every session (events, subtitles, narration) in a folder of its own; --no-record: don't"
    )
    record_dir: Path | None = Field(
        None, description="where sessions are kept (default: the user's data folder, onlooker/sessions)"
    )
    subtitles: Path | None = Field(
        None, description="headless: also write the comments as subtitles to this .srt or .vtt file"
    )
    export: Path | None = Field(
        None, description="headless: at the end, write the session as a narrated MP4 (video, narration, subtitles)"
    )
    export_burn_subtitles: bool = Field(
        False, description="headless: --export draws the subtitles into the picture (re-encodes the video)"
    )
    keep_days: float | None = Field(
        None, gt=0, description="remove recorded sessions older than this many days (at start and hourly)"
    )
    max_record_gb: float | None = Field(
        None, gt=0, description="remove the oldest recorded sessions while all of them take more than this (GB)"
    )
    history: bool = Field(False, description="list the recorded sessions, one line each, and exit")
    history_search: str | None = Field(None, description="search the comments of every recorded session and exit")
    watch: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description='alert when this is true: "TEXT" or "NAME=TEXT" (repeatable; in the env, one per line or ;)',
    )
    watch_interval: float = Field(
        10.0, ge=1, le=3600, description="check the rules at least this often (s) while the picture is still"
    )
    watch_cooldown: float = Field(60.0, ge=0, le=86_400, description="seconds before a rule may alert again")
    watch_camera_cooldown: float = Field(
        0.0, ge=0, le=86_400, description="seconds after any alert on a camera before it may alert again"
    )
    watch_confirm: int = Field(1, ge=1, le=20, description="consecutive yes answers that confirm an alert")
    watch_clear: int = Field(2, ge=1, le=100, description="consecutive no answers that clear an alert")
    watch_min_confidence: float = Field(0.5, ge=0, le=1, description="a yes less sure than this counts as a no")
    watch_clip: float = Field(
        5.0, ge=0, le=60, description="seconds of video kept before and after an alert (0: no clip)"
    )
    webhook: str | None = Field(None, description="POST every alert (JSON with the snapshot) to this URL")
    webhook_secret: str | None = Field(
        None, description="sign webhook bodies with HMAC-SHA256 (header X-Onlooker-Signature)"
    )
    mqtt: str | None = Field(
        None, description="publish alerts to this MQTT broker: mqtt://user:pass@host:1883 or mqtts://"
    )
    mqtt_topic: str = Field("onlooker", pattern=r"^[^#+]+$", description="MQTT: the base topic")
    mqtt_discovery: str = Field(
        "homeassistant", description="MQTT: Home Assistant's discovery prefix ('' to announce nothing)"
    )
    notify: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="push every alert through Apprise to this URL (ntfy://, tgram://, discord://, mailto://...; "
        "repeatable)",
    )
    presets_file: Path = Field(PRESETS_FILE, description="YAML file of presets")
    profiles_dir: Path = Field(PROFILES_DIR, description="folder of profile YAML files")
    config: Path | None = Field(
        None,
        description="settings file (YAML; default: onlooker.yaml here if it exists, else in the user's config "
        "folder); flags and env win over it, it wins over .env",
    )

    @field_validator("watch", mode="before")
    @classmethod
    def _rules_from_env(cls, value: object) -> object:
        return split_rules(value) if isinstance(value, str) else value

    @field_validator("notify", mode="before")
    @classmethod
    def _urls_from_env(cls, value: object) -> object:
        return value.split() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (the init arguments) > environment > settings file > ``.env`` > defaults: the file holds what
        the user keeps, so a variable or flag given for one run still wins over it."""
        file_settings = SettingsFileSource(settings_cls, dotenv_settings)
        return init_settings, env_settings, file_settings, dotenv_settings, file_secret_settings

    def rule_defaults(self) -> RuleDefaults:
        """What a rule does when it does not say otherwise."""
        return RuleDefaults(
            cooldown=self.watch_cooldown,
            confirm=self.watch_confirm,
            clear=self.watch_clear,
            min_confidence=self.watch_min_confidence,
        )

    def logins(self) -> list[tuple[str, str]]:
        """``--auth`` as (user, password) pairs."""
        return [
            (user, password) for user, password in (pair.split(":", 1) for pair in (self.auth or "").split(",") if pair)
        ]

    def where(self, key: str) -> str:
        """Where the user may have given ``key``, for a message about its value: the flag and the variable, and
        the settings file when it holds the key (``--profile / ONLOOKER_PROFILE / profile in ~/…/onlooker.yaml``)."""
        names = f"--{key.replace('_', '-')} / ONLOOKER_{key.upper()}"
        path = holding_file(key, self.config)
        return f"{names} / {key} in {shown_path(path)}" if path is not None else names

    def tuning(self, presets: PresetFile) -> Tuning:
        """The chosen preset with any explicit capture/window/stride/token overrides applied."""
        base = pick(self.preset or presets.default, presets.presets, "preset", lambda: self.where("preset"))
        overrides = {
            k: v for k in ("capture_fps", "window", "stride", "max_tokens") if (v := getattr(self, k)) is not None
        }
        return base.model_copy(update=overrides)


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from CLI overrides (None = not given), env, the settings file and ``.env``; errors name the
    variable (or the file and key, for the settings file's)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        lines = []
        for problem in exc.errors():
            key = str(problem["loc"][0]) if problem["loc"] else "?"
            lines.append(f"--{key.replace('_', '-')} / ONLOOKER_{key.upper()}: {problem['msg']}")
        raise ConfigError("\n".join(lines)) from None
    return settings
