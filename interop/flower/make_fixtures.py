"""Fixtures for test/federated/*: values made by flwr 1.42's own code, which the TypeScript client must match.

- npy.json: `np.save` bytes of float32 / float16 / bfloat16 (ml_dtypes) arrays, as Flower's Array carries them;
- message.json: a train Message whose content holds an ArrayRecord (one array cut into 64-byte chunks, with a
  repeated chunk), a MetricRecord and a ConfigRecord: every object's bytes, the object tree and the message id;
- signing.json: a P-384 key as Flower serialises it (PKCS#8 PEM, SubjectPublicKeyInfo PEM), a timestamp signed
  by `sign_message` (DER), and DER encodings of chosen (r, s) pairs (leading zeros and high bits).

Run: interop/.venv-flower/bin/python interop/flower/make_fixtures.py test/fixtures/federated
"""

import base64
import json
import os
import sys

os.environ["FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE"] = "64"  # read when flwr is imported: small chunks to test chunking

import io

import ml_dtypes
import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.common.serde_utils import metadata_to_proto
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.primitives.asymmetric import (
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
    sign_message,
    verify_signature,
)

b64 = lambda b: base64.b64encode(bytes(b)).decode("ascii")


def npy(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def npy_fixture():
    vals = np.array([[1.5, -2.0, 3.25], [0.0, 1e-3, -65504.0]], dtype=np.float32)
    cases = [
        ("float32 2x3", vals),
        ("float16 2x3", vals.astype(np.float16)),
        ("bfloat16 2x3", vals.astype(ml_dtypes.bfloat16)),
        ("float32 5", np.arange(5, dtype=np.float32) / 7),
        ("float32 scalar", np.array(2.5, dtype=np.float32)),
        ("float32 1000x3", np.zeros((1000, 3), dtype=np.float32)),
    ]
    return [
        {
            "name": name,
            "dtype": str(a.dtype),
            "shape": list(a.shape),
            "values": a.astype(np.float64).ravel().tolist() if a.size <= 16 else [],
            "npy": b64(npy(a)),
        }
        for name, a in cases
    ]


def message_fixture():
    a = np.linspace(-1, 1, 40, dtype=np.float32).reshape(8, 5)
    z = np.zeros((4, 8), dtype=np.float32)  # 128 zero bytes after the header: two equal 64-byte chunks
    content = RecordDict(
        {
            "arrays": ArrayRecord({"layer.lora_A": Array(a), "layer.lora_B": Array(z), "ünï": Array(a.astype(np.float16))}),
            "metrics": MetricRecord({"num-examples": 12, "train-loss": 2.5, "losses": [1.0, 0.5]}),
            "config": ConfigRecord({"server-round": 3, "lr": 0.01, "strategy": "fedavg", "flag": True}),
        }
    )
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 42, 1, 7
    msg = Message(content, dst_node_id=1234, message_type="train", group_id="3", ttl=3600.0)
    msg.metadata.__dict__["_created_at"] = 1764762000.25
    objects = get_all_nested_objects(msg)
    tree = get_object_tree(msg)

    def tree_json(t):
        return {"id": t.object_id, "children": [tree_json(c) for c in t.children]}

    md = msg.metadata
    return {
        "metadata_proto": b64(metadata_to_proto(md).SerializeToString()),
        "metadata": {
            "run_id": md.run_id,
            "src_node_id": md.src_node_id,
            "dst_node_id": md.dst_node_id,
            "group_id": md.group_id,
            "ttl": md.ttl,
            "message_type": md.message_type,
            "created_at": md.created_at,
        },
        "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype, "values": v.numpy().astype(np.float64).ravel().tolist()}
                   for k, v in content["arrays"].items()},
        "message_id": msg.object_id,
        "tree": tree_json(tree),
        "objects": {oid: b64(o.deflate()) for oid, o in objects.items()},
    }


def signing_fixture():
    sk, pk = generate_key_pairs()
    ts = "2026-12-03T11:46:50.123456+00:00"
    sig = sign_message(sk, ts.encode("ascii"))
    assert verify_signature(pk, ts.encode("ascii"), sig)
    n = 48
    pairs = []
    for r, s in [(1, 2), (2**383 + 5, 7), (2**376 - 1, 2**384 - 3), (0x7F << 376, 0x80 << 376)]:
        pairs.append({"p1363": b64(r.to_bytes(n, "big") + s.to_bytes(n, "big")), "der": b64(encode_dss_signature(r, s))})
    return {
        "private_key_pem": private_key_to_bytes(sk).decode("ascii"),
        "public_key_pem": public_key_to_bytes(pk).decode("ascii"),
        # what `flwr supernode register` reads (an SSH-format key; it refuses PEM)
        "public_key_openssh": pk.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode("ascii"),
        "timestamp": ts,
        "signature_der": b64(sig),
        "der_pairs": pairs,
    }


def main(out):
    os.makedirs(out, exist_ok=True)
    for name, make in [("npy", npy_fixture), ("message", message_fixture), ("signing", signing_fixture)]:
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(make(), f, indent=1)
            f.write("\n")
    print("wrote", out)


if __name__ == "__main__":
    main(sys.argv[1])
