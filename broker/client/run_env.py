"""What ``broker run`` gives the command it runs: pure functions from tokens to files and
environment variables (the command's I/O is ``broker.cli.run_cmd``'s).

git: ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` (appended after any
the caller already set) carry, per git host of the tokens,
``url.<gw>/git/<host>/.insteadOf=https://<host>/`` (so ``git clone
https://github.com/acme/widgets`` goes through the gateway unchanged) and one
``include.path`` naming a private file that holds
``[http "<gw>/git/<host>/"] extraHeader = Authorization: Bearer <token>``. git reads that
file again in every git process, so when ``broker run`` replaces the token before it
expires, the next git command sends the new one: a long command never holds a dead token.

http (and every other kind): ``CAPBROKER_GATEWAY`` (the gateway's base URL),
``CAPBROKER_TOKENS_DIR`` (a private directory with ``<audience>.token`` files, replaced
before they expire) and, when there is exactly one such token, ``CAPBROKER_TOKEN_FILE``
(its file) and ``CAPBROKER_TOKEN`` (its value at start: an environment cannot change under
a running process, so a command that runs longer than the token's lifetime reads the file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from broker.client.freshness import IssuedToken

GIT_INCLUDE = "git-credentials.config"


def git_hosts(token: IssuedToken) -> list[str]:
    """The hosts of the token's git capabilities (``HOST/OWNER/REPO``)."""
    return sorted({str(c["resource"]).split("/", 1)[0] for c in token.capabilities if c.get("kind") == "git"})


@dataclass(frozen=True, slots=True)
class Split:
    git: dict[str, IssuedToken]  # host -> the token for it
    other: list[IssuedToken]


def split(tokens: Sequence[IssuedToken]) -> Split:
    git: dict[str, IssuedToken] = {}
    other: list[IssuedToken] = []
    for token in tokens:
        hosts = git_hosts(token)
        if not hosts:
            other.append(token)
        for host in hosts:
            if host in git:
                raise ValueError(f"two tokens for git host {host!r}: mint them in separate runs")
            git[host] = token
    return Split(git, other)


def gateway_git_base(gateway: str) -> str:
    return gateway.rstrip("/") + "/git/"


def git_include_text(gateway: str, git: Mapping[str, IssuedToken]) -> str:
    """The included git config: one extra header per host, for that host's URLs only."""
    base = gateway_git_base(gateway)
    return "".join(
        f'[http "{base}{host}/"]\n\textraHeader = Authorization: Bearer {token.token}\n' for host, token in git.items()
    )


def git_env(environ: Mapping[str, str], gateway: str, hosts: Sequence[str], include_path: str) -> dict[str, str]:
    """The ``GIT_CONFIG_*`` variables, after the ones ``environ`` already has."""
    try:
        start = int(environ.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        start = 0
    base = gateway_git_base(gateway)
    entries = [(f"url.{base}{host}/.insteadOf", f"https://{host}/") for host in hosts]
    entries.append(("include.path", include_path))
    env = {"GIT_CONFIG_COUNT": str(start + len(entries))}
    for i, (key, value) in enumerate(entries, start=start):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def token_file_name(audience: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in audience) + ".token"


def http_env(gateway: str | None, other: Sequence[IssuedToken], tokens_dir: str) -> dict[str, str]:
    env = {"CAPBROKER_TOKENS_DIR": tokens_dir}
    if gateway:
        env["CAPBROKER_GATEWAY"] = gateway.rstrip("/")
    if len(other) == 1:
        env["CAPBROKER_TOKEN"] = other[0].token
        env["CAPBROKER_TOKEN_FILE"] = f"{tokens_dir}/{token_file_name(other[0].audience)}"
    return env
