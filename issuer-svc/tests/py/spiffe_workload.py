"""A SPIFFE workload nobody here wrote the client of: py-spiffe (PyPI `spiffe`) and its TLS
package (PyPI `spiffe-tls`) against `meshca agent --workload-api-socket`.

Used by issuer-svc/tests/workload_api.rs; each mode prints JSON lines on stdout.

  fetch SOCKET                 one X.509 context and the X.509 bundles (retrying while the agent
                               answers UNAVAILABLE, up to 30 s)
  once SOCKET                  one X.509 context, no retry: the context, or the gRPC error code
  raw SOCKET                   py-spiffe's generated stub, without and with the security header
  stream SOCKET SECONDS        every update of stream_x509_contexts, for SECONDS
  bundles SOCKET SECONDS       every message of FetchX509Bundles, for SECONDS
  mtls SOCKET_A SOCKET_B       workload A listens, workload B dials: mutual TLS with both SVIDs,
                               each side checking the other's SPIFFE ID
"""

import json
import signal
import sys
import threading
import time

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe import SpiffeId, TrustDomain, WorkloadApiClient, X509Bundle, X509Source
from spiffe._proto import workload_pb2, workload_pb2_grpc
from spiffetls import ListenOptions, dial, listen
from spiffetls.mode import ClientTlsMode
from spiffetls.tlsconfig.authorize import authorize_id


def out(obj):
    print(json.dumps(obj), flush=True)


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def uris(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]


def describe_context(ctx):
    svid = ctx.default_svid
    leaf = svid.leaf
    roots = ctx.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    root_certs = list(roots.x509_authorities) if roots else []
    # The leaf is signed by one of the bundle's roots (builtin CAs sign leaves directly).
    verified = False
    for root in root_certs:
        try:
            leaf.verify_directly_issued_by(root)
            verified = True
        except Exception:  # noqa: BLE001 - another root of the bundle
            pass
    pub = lambda k: k.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "spiffe_id": str(svid.spiffe_id),
        "uris": uris(leaf),
        "serial": format(leaf.serial_number, "x"),
        "not_after": int(leaf.not_valid_after_utc.timestamp()),
        "now": time.time(),
        "key_matches": pub(leaf) == pub(svid.private_key),
        "chain": [pem(c) for c in svid.cert_chain],
        "roots": [pem(c) for c in root_certs],
        "verified": verified,
    }


def code_of(e):
    code = getattr(e, "code", None)
    if callable(code):
        return code().name
    cause = e.__cause__ or e.__context__
    if cause is not None and cause is not e:
        return code_of(cause)
    return type(e).__name__ + ": " + str(e)


def fetch(sock):
    client = WorkloadApiClient(socket_path="unix://" + sock, default_timeout=10)
    deadline = time.time() + 30
    while True:
        try:
            ctx = client.fetch_x509_context()
            break
        except Exception as e:  # noqa: BLE001 - UNAVAILABLE until the first SVID arrives
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    result = describe_context(ctx)
    bundles = client.fetch_x509_bundles()
    result["bundles"] = {
        str(b.trust_domain): [pem(c) for c in b.x509_authorities] for b in bundles.bundles
    }
    out(result)
    client.close()


def once(sock):
    client = WorkloadApiClient(socket_path="unix://" + sock, default_timeout=10)
    try:
        out(describe_context(client.fetch_x509_context()))
    except Exception as e:  # noqa: BLE001
        out({"error": code_of(e)})
    client.close()


def raw(sock):
    channel = grpc.insecure_channel("unix://" + sock)
    stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
    result = {}

    def first(call):
        try:
            next(iter(call))
            return "OK"
        except grpc.RpcError as e:
            return e.code().name

    result["x509svid_without_header"] = first(
        stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=10)
    )
    result["bundles_without_header"] = first(
        stub.FetchX509Bundles(workload_pb2.X509BundlesRequest(), timeout=10)
    )
    header = [("workload.spiffe.io", "true")]
    result["x509svid_with_header"] = first(
        stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=10, metadata=header)
    )
    result["wrong_header_value"] = first(
        stub.FetchX509SVID(
            workload_pb2.X509SVIDRequest(), timeout=10, metadata=[("workload.spiffe.io", "yes")]
        )
    )
    try:
        stub.FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["x"]), timeout=10, metadata=header
        )
        result["jwt"] = "OK"
    except grpc.RpcError as e:
        result["jwt"] = e.code().name
    out(result)


def stream(sock, seconds):
    client = WorkloadApiClient(socket_path="unix://" + sock)
    done = threading.Event()

    def on_success(ctx):
        out({"update": describe_context(ctx)})

    def on_error(e):
        out({"error": code_of(e)})

    handle = client.stream_x509_contexts(on_success, on_error, retry_connect=True)
    done.wait(float(seconds))
    handle.cancel()
    out({"done": True})


def bundles(sock, seconds):
    channel = grpc.insecure_channel("unix://" + sock)
    stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
    call = stub.FetchX509Bundles(
        workload_pb2.X509BundlesRequest(),
        timeout=float(seconds),
        metadata=[("workload.spiffe.io", "true")],
    )
    try:
        for msg in call:
            out({
                "bundles": {
                    td: [pem(c) for c in X509Bundle.parse_raw(TrustDomain(td), der).x509_authorities]
                    for td, der in msg.bundles.items()
                }
            })
    except grpc.RpcError as e:
        out({"end": e.code().name})


def mtls(sock_a, sock_b):
    a = X509Source(socket_path="unix://" + sock_a, timeout_in_seconds=30)
    b = X509Source(socket_path="unix://" + sock_b, timeout_in_seconds=30)
    id_a = a.get_x509_context().default_svid.spiffe_id
    id_b = b.get_x509_context().default_svid.spiffe_id
    server = listen(
        "127.0.0.1:0", a, ListenOptions(authorize_fn=authorize_id(id_b))
    )
    port = server.getsockname()[1]
    seen = {}

    def serve():
        for attempt in range(2):
            try:
                conn, _ = server.accept()
                conn.setblocking(True)
                conn.do_handshake()
                peer = conn.get_peer_certificate().to_cryptography()
                seen["server_saw"] = uris(peer)
                data = conn.recv(64)
                conn.sendall(b"pong:" + data)
                conn.shutdown()
                conn.close()
            except Exception as e:  # noqa: BLE001 - the second client expects another ID
                seen.setdefault("server_errors", []).append(type(e).__name__)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    conn = dial(f"127.0.0.1:{port}", b, ClientTlsMode.TLS, authorize_id(id_a))
    client_saw = uris(conn.get_peer_certificate().to_cryptography())
    conn.sendall(b"ping")
    reply = conn.recv(64)
    conn.close()
    # B expecting another SPIFFE ID than A's refuses A.
    try:
        c2 = dial(
            f"127.0.0.1:{port}",
            b,
            ClientTlsMode.TLS,
            authorize_id(SpiffeId("spiffe://default/someone-else")),
        )
        c2.close()
        wrong = "accepted"
    except Exception as e:  # noqa: BLE001
        wrong = type(e).__name__
    t.join(30)
    out({
        "a": str(id_a),
        "b": str(id_b),
        "client_saw": client_saw,
        "reply": reply.decode(),
        "wrong_id": wrong,
        **seen,
    })
    a.close()
    b.close()


if __name__ == "__main__":
    # Nothing here may hang a test: the process ends after 90 s whatever it is doing.
    signal.alarm(90)
    mode, args = sys.argv[1], sys.argv[2:]
    {"fetch": fetch, "once": once, "raw": raw, "stream": stream, "bundles": bundles,
     "mtls": mtls}[mode](*args)
