"""The WeCom callback scheme (WXBizMsgCrypt): SHA1 signatures and AES-256-CBC message encryption.

msg_signature = sha1(sorted([token, timestamp, nonce, encrypt]) joined)
key = base64(EncodingAESKey + "="), iv = key[:16], PKCS#7 padding to 32-byte blocks,
plaintext = 16 random bytes + 4-byte big-endian length + message + receive id.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32


class CallbackError(Exception):
    """A callback we must refuse. `status` is the HTTP answer: 403 forged/stale, 400 unparseable."""

    status = 400


class SignatureMismatch(CallbackError):
    status = 403


class ReceiveIdMismatch(CallbackError):
    status = 403


class StaleTimestamp(CallbackError):
    status = 403


class Undecryptable(CallbackError):
    status = 400


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode()).hexdigest()


class WeComCrypto:
    """Signs, verifies, encrypts and decrypts callback payloads for one app (or the AI bot)."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if len(encoding_aes_key) != 43:
            raise ValueError("EncodingAESKey must be 43 characters — copy it from the WeCom admin console")
        self.token = token
        self.key = base64.b64decode(encoding_aes_key + "=")
        self.receive_id = receive_id

    def verify(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        expected = signature(self.token, timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), (msg_signature or "").encode()):
            raise SignatureMismatch("msg_signature does not match")

    def decrypt(self, encrypt: str) -> str:
        try:
            data = base64.b64decode(encrypt, validate=True)
            if not data or len(data) % 16:
                raise ValueError("ciphertext is not whole AES blocks")
            decryptor = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).decryptor()
            padded = decryptor.update(data) + decryptor.finalize()
            pad = padded[-1]
            if not 1 <= pad <= BLOCK or padded[-pad:] != bytes([pad]) * pad:
                raise ValueError("bad PKCS#7 padding")
            plain = padded[:-pad]
            (length,) = struct.unpack(">I", plain[16:20])
            message, receive_id = plain[20:20 + length], plain[20 + length:]
            if len(message) != length:
                raise ValueError("length prefix is longer than the message")
            text = message.decode("utf-8")
            rid = receive_id.decode("utf-8")
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            raise Undecryptable(str(exc)) from None
        if not hmac.compare_digest(rid.encode(), self.receive_id.encode()):
            raise ReceiveIdMismatch("receive id does not match this corp/app")
        return text

    def encrypt(self, message: str, random16: bytes | None = None) -> str:
        body = message.encode("utf-8")
        plain = (random16 or os.urandom(16)) + struct.pack(">I", len(body)) + body + self.receive_id.encode()
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        encryptor = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()
