"""The Privatemode wire protocol core: pure code, no I/O, for the client and the server side.

- HPKE with the X-Wing KEM (MLKEM768-X25519), export-only (``_hpke``);
- field encryption of request and response bodies (``_fieldcipher``);
- the secret exchange and its signature over the mesh-CA certificate (``_secretexchange``);
- the NVIDIA OCSP policy headers (``_ocsp``).
"""

from ._fieldcipher import (
    EMBEDDINGS_REQUEST_PLAIN_FIELDS,
    EMBEDDINGS_RESPONSE_PLAIN_FIELDS,
    FieldCipherError,
    RequestCipher,
    ResponseCipher,
    UnknownSecretError,
)
from ._hpke import (
    XWING_ENC_SIZE,
    XWING_PUBLIC_KEY_SIZE,
    XWING_SEED_SIZE,
    ExportContext,
    HpkeError,
    XWingPrivateKey,
    setup_base_receiver_export,
    setup_base_sender_export,
    xwing_encapsulate,
)
from ._ocsp import (
    NVIDIA_OCSP_POLICY_HEADER,
    NVIDIA_OCSP_POLICY_MAC_HEADER,
    nvidia_ocsp_policy_headers,
)
from ._secretexchange import (
    ClientSecretExchange,
    Secret,
    SecretExchangeError,
    exchange_digest,
    secret_id_for,
    serve_secret_exchange,
    sign_exchange,
    verify_exchange,
)

__all__ = [
    "EMBEDDINGS_REQUEST_PLAIN_FIELDS",
    "EMBEDDINGS_RESPONSE_PLAIN_FIELDS",
    "NVIDIA_OCSP_POLICY_HEADER",
    "NVIDIA_OCSP_POLICY_MAC_HEADER",
    "XWING_ENC_SIZE",
    "XWING_PUBLIC_KEY_SIZE",
    "XWING_SEED_SIZE",
    "ClientSecretExchange",
    "ExportContext",
    "FieldCipherError",
    "HpkeError",
    "RequestCipher",
    "ResponseCipher",
    "Secret",
    "SecretExchangeError",
    "UnknownSecretError",
    "XWingPrivateKey",
    "exchange_digest",
    "nvidia_ocsp_policy_headers",
    "secret_id_for",
    "serve_secret_exchange",
    "setup_base_receiver_export",
    "setup_base_sender_export",
    "sign_exchange",
    "verify_exchange",
    "xwing_encapsulate",
]
