"""The keys of the secret store and the cipher made of them (``cryptography``'s Fernet).

Where the keys come from (:func:`load_keys`): ``FLEET_SECRETS_KEY``, one or more Fernet keys
separated by commas; unset, the file ``$FLEET_HOME/secrets.key`` when it exists (written by
`fleet up` when it runs its embedded database, :func:`ensure_key_file`). Rotation: put a new
key first, keep the old ones after it, run `fleet secrets rotate` (every value re-encrypted
with the first key), then drop the old keys.

Each value is encrypted together with its secret's name (:meth:`SecretCipher.encrypt`), so a
token copied onto another name's row does not decrypt as that secret.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.errors import ConfigError
from shared.settings import Settings

__all__ = [
    "KEY_FILE_NAME",
    "NoSecretsKey",
    "SecretCipher",
    "UnreadableSecret",
    "ensure_key_file",
    "key_file",
    "load_keys",
]

KEY_FILE_NAME = "secrets.key"


class NoSecretsKey(ConfigError):
    """The store was asked to encrypt (or decrypt) without a key."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            "no secrets key: set FLEET_SECRETS_KEY to one or more Fernet keys, comma-separated "
            "(`fleet secrets keygen` prints a new one), or run `fleet up` with its embedded database, "
            f"which keeps one in {key_file(settings)}"
        )


class UnreadableSecret(ConfigError):
    """A stored token that none of the keys decrypts (a key was dropped before `fleet secrets
    rotate`, or the row was tampered with). Names the secret, never a value."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"secret {name!r} cannot be decrypted with FLEET_SECRETS_KEY: was a key removed before "
            "`fleet secrets rotate` re-encrypted it? Set it again with `fleet secrets set`"
        )
        self.name = name


def key_file(settings: Settings) -> Path:
    """The local key file: ``$FLEET_HOME/secrets.key``."""
    return settings.home / KEY_FILE_NAME


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def load_keys(settings: Settings) -> list[str]:
    """The configured keys, first (encrypting) first; ``[]`` when there are none."""
    if settings.secrets_key is not None:
        return _split(settings.secrets_key.get_secret_value())
    path = key_file(settings)
    try:
        return _split(path.read_text())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read the secrets key file {path}: {exc.strerror}") from None


def ensure_key_file(settings: Settings) -> tuple[Path, bool]:
    """Make sure ``$FLEET_HOME/secrets.key`` holds a key (created with mode 0600 when absent);
    returns its path and whether it was created now."""
    path = key_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path, False
    with os.fdopen(fd, "w") as out:
        out.write(Fernet.generate_key().decode() + "\n")
    return path, True


class SecretCipher:
    """Encrypts with the first key, decrypts with any (``MultiFernet``)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ConfigError("a secret cipher needs at least one key")
        fernets = []
        for number, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key.encode()))
            except (ValueError, TypeError):
                # Never echo the key: say which one it is.
                raise ConfigError(
                    f"FLEET_SECRETS_KEY: key {number} of {len(keys)} is not a Fernet key "
                    "(32 bytes, url-safe base64: `fleet secrets keygen` prints one)"
                ) from None
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretCipher | None:
        """The cipher of the configured keys; ``None`` without any."""
        keys = load_keys(settings)
        return cls(keys) if keys else None

    def encrypt(self, name: str, value: str) -> str:
        return self._fernet.encrypt(orjson.dumps({"name": name, "value": value})).decode()

    def decrypt(self, name: str, token: str) -> str:
        """The value of ``name`` from its stored token; :class:`UnreadableSecret` when no key
        decrypts it or it was made for another name."""
        try:
            document = orjson.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, orjson.JSONDecodeError):
            raise UnreadableSecret(name) from None
        if not isinstance(document, dict) or document.get("name") != name:
            raise UnreadableSecret(name)
        value = document.get("value")
        if not isinstance(value, str):
            raise UnreadableSecret(name)
        return value

    def rotate(self, name: str, token: str) -> str:
        """``token`` re-encrypted with the first key (checked to be ``name``'s first)."""
        self.decrypt(name, token)
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise UnreadableSecret(name) from None

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()
