"""ONNX import: imported float logits equal onnxruntime's (the reference implementation)
on the standard topologies and on small graphs of every supported op and padding case;
imported models run through static, LZS and ReDy with exact equal to faithful;
unsupported ops are named before any work."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import redy_jax as rj  # noqa: E402
from redy_jax.onnx_import import OnnxImportError, from_onnx  # noqa: E402
from redy_jax.policy import LeadingZeroSkip, ReDy, Static  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("onnx_graphs", ROOT / "experiments" /
                                               "onnx_graphs.py")
og = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(og)


def _check(model, rtol=1e-4, seed=0):
    """Imported float output vs onnxruntime on a random NCHW input (NHWC for us)."""
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    mod, v = from_onnx(model)
    xin = np.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x
    out = np.asarray(mod.apply(v, jnp.asarray(xin)))
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= rtol * max(np.abs(ref).max(), 1e-6), \
        np.abs(out - ref).max() / np.abs(ref).max()
    return mod, v, xin


ARCH = {
    "resnet18": dict(size=32, width=0.25),
    "resnet50": dict(size=32, width=0.125),
    "mobilenetv2": dict(size=32, width=0.25),
    "vgg16": dict(size=32, width=0.125, hidden=128),
    "alexnet": dict(size=64, width=0.25, hidden=128),
}


@pytest.mark.parametrize("arch", list(ARCH))
def test_standard_topologies_equal_onnxruntime(arch):
    _check(og.ARCHITECTURES[arch](classes=10, batch=2, **ARCH[arch]))


def _simulate_all_policies(arch):
    """Static, LZS and ReDy on the whole imported model (exact ADC), and a per-layer mix
    of the three whose exact results equal the faithful bit-plane model's."""
    mod, v, x = _check(og.ARCHITECTURES[arch](classes=10, batch=2, **ARCH[arch]))
    spec = rj.isaac()
    cal = rj.calibrate(mod, v, x, spec)
    thr = jnp.array([2.0, 4.0, 8.0, 16.0])
    policies = (Static(), LeadingZeroSkip(), ReDy(thresholds=thr))
    energies = {}
    for policy in policies:
        _, r = rj.evaluate(mod, v, x, spec, policy, calibration=cal, mode="exact")
        energies[policy.name] = r.chip_energy_pj_per_image()
    assert energies["lzs"] < energies["static"]
    mixed = rj.policy.PolicyMap.per_layer({p: policies[i % 3]
                                           for i, p in enumerate(cal.layers)})
    le, re = rj.evaluate(mod, v, x, spec, mixed, calibration=cal, mode="exact")
    lf, rf = rj.evaluate(mod, v, x, spec, mixed, calibration=cal, mode="bit_plane")
    np.testing.assert_array_equal(np.asarray(le), np.asarray(lf))
    assert re.to_dict() == rf.to_dict()


def test_an_imported_resnet18_runs_every_policy_exact_equal_to_faithful():
    _simulate_all_policies("resnet18")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet50", "mobilenetv2", "vgg16", "alexnet"])
def test_imported_topologies_run_every_policy_exact_equal_to_faithful(arch):
    _simulate_all_policies(arch)


def _graph(nodes, inits, in_shape, out, opset=17, extra_inputs=()):
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape),
                     *extra_inputs],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


R = np.random.default_rng(1)
W = R.normal(size=(6, 4, 3, 3)).astype(np.float32)
WG = R.normal(size=(6, 2, 3, 3)).astype(np.float32)
B6 = R.normal(size=6).astype(np.float32)
C4 = lambda: R.normal(size=(4, 1, 1)).astype(np.float32)  # noqa: E731

OPS = {
    "conv_asymmetric_pads": ([helper.make_node("Conv", ["input", "w", "b"], ["y"],
                                               pads=[0, 1, 2, 1])], {"w": W, "b": B6}),
    "conv_group_dilation_stride": ([helper.make_node(
        "Conv", ["input", "w"], ["y"], group=2, dilations=[2, 1], strides=[2, 1],
        pads=[2, 1, 2, 1])], {"w": WG}),
    "conv_same_upper": ([helper.make_node("Conv", ["input", "w"], ["y"], auto_pad="SAME_UPPER",
                                          strides=[2, 2])], {"w": W}),
    "conv_same_lower": ([helper.make_node("Conv", ["input", "w"], ["y"], auto_pad="SAME_LOWER",
                                          strides=[2, 2])], {"w": W}),
    "conv_valid": ([helper.make_node("Conv", ["input", "w"], ["y"], auto_pad="VALID")],
                   {"w": W}),
    "batchnorm_relu": ([helper.make_node("BatchNormalization", ["input", "s", "b", "m", "v"],
                                         ["t"], epsilon=1e-3),
                        helper.make_node("Relu", ["t"], ["y"])],
                       {"s": np.ones(4, np.float32) * 1.5, "b": np.arange(4, dtype=np.float32),
                        "m": np.full(4, 0.2, np.float32), "v": np.full(4, 2.0, np.float32)}),
    "clip_inputs": ([helper.make_node("Clip", ["input", "lo", "hi"], ["y"])],
                    {"lo": np.float32(-0.5), "hi": np.float32(0.7)}),
    "leakyrelu_sigmoid": ([helper.make_node("LeakyRelu", ["input"], ["t"], alpha=0.2),
                           helper.make_node("Sigmoid", ["t"], ["y"])], {}),
    "hardsigmoid_hardswish": ([helper.make_node("HardSigmoid", ["input"], ["t"], alpha=0.3,
                                                beta=0.4),
                               helper.make_node("HardSwish", ["t"], ["y"])], {}),
    "add_mul_channel_constants": ([helper.make_node("Add", ["input", "a"], ["t"]),
                                   helper.make_node("Mul", ["t", "m"], ["y"])],
                                  {"a": C4(), "m": C4()}),
    "concat_channels": ([helper.make_node("Relu", ["input"], ["r"]),
                         helper.make_node("Concat", ["input", "r"], ["y"], axis=1)], {}),
    "maxpool_pads": ([helper.make_node("MaxPool", ["input"], ["y"], kernel_shape=[3, 2],
                                       strides=[2, 1], pads=[1, 0, 1, 1])], {}),
    "avgpool_count_include_pad": ([helper.make_node("AveragePool", ["input"], ["y"],
                                                    kernel_shape=[3, 3], strides=[2, 2],
                                                    pads=[1, 1, 1, 1], count_include_pad=1)],
                                  {}),
    "avgpool_exclude_pad": ([helper.make_node("AveragePool", ["input"], ["y"],
                                              kernel_shape=[3, 3], strides=[2, 2],
                                              pads=[1, 1, 1, 1], count_include_pad=0)], {}),
    "global_pools_flatten_gemm": ([
        helper.make_node("GlobalAveragePool", ["input"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1, alpha=0.5, beta=2.0)],
        {"gw": R.normal(size=(3, 4)).astype(np.float32),
         "gb": R.normal(size=3).astype(np.float32)}),
    "matmul_add": ([helper.make_node("Flatten", ["input"], ["f"]),
                    helper.make_node("MatMul", ["f", "mw"], ["t"]),
                    helper.make_node("Add", ["t", "mb"], ["y"])],
                   {"mw": R.normal(size=(4 * 7 * 7, 5)).astype(np.float32),
                    "mb": R.normal(size=5).astype(np.float32)}),
    "reshape_shape_subgraph": ([
        helper.make_node("Shape", ["input"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["input", "shape"], ["y"])],
        {"i0": np.int64(0), "ax": np.asarray([0], np.int64), "m1": np.asarray([-1], np.int64)}),
    "squeeze_unsqueeze_transpose": ([
        helper.make_node("GlobalMaxPool", ["input"], ["g"]),
        helper.make_node("Squeeze", ["g", "sq"], ["s"]),
        helper.make_node("Unsqueeze", ["s", "uq"], ["u"]),
        helper.make_node("Transpose", ["u"], ["y"], perm=[1, 0, 2])],
        {"sq": np.asarray([2, 3], np.int64), "uq": np.asarray([2], np.int64)}),
    "identity_dropout": ([helper.make_node("Identity", ["input"], ["t"]),
                          helper.make_node("Dropout", ["t"], ["y"])], {}),
}


@pytest.mark.parametrize("case", list(OPS))
def test_each_op_and_padding_case_equals_onnxruntime(case):
    nodes, inits = OPS[case]
    _check(_graph(nodes, inits, [2, 4, 7, 7], "y"))


def test_opset_11_attribute_forms():
    """Opset 11: Squeeze/Unsqueeze axes as attributes, Dropout's ratio attribute."""
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["g"]),
             helper.make_node("Squeeze", ["g"], ["s"], axes=[2, 3]),
             helper.make_node("Unsqueeze", ["s"], ["u"], axes=[1]),
             helper.make_node("Dropout", ["u"], ["y"], ratio=0.3)]
    _check(_graph(nodes, {}, [2, 4, 5, 5], "y", opset=11))


def test_unsupported_ops_are_named_before_any_work():
    nodes = [helper.make_node("ConvTranspose", ["input", "w"], ["y"], name="up1")]
    with pytest.raises(OnnxImportError, match=r"'up1'.*ConvTranspose \(opset 17\) is not "
                                              r"mapped to crossbars"):
        from_onnx(_graph(nodes, {"w": W}, [2, 4, 7, 7], "y"))
    nodes = [helper.make_node("Erf", ["input"], ["y"], name="e")]
    with pytest.raises(OnnxImportError, match=r"'e'.*op Erf \(opset 17\) is not supported"):
        from_onnx(_graph(nodes, {}, [2, 4, 7, 7], "y"))
    with pytest.raises(OnnxImportError, match="opset 9 is not supported"):
        from_onnx(_graph([helper.make_node("Relu", ["input"], ["y"])], {}, [1, 1, 2, 2], "y",
                         opset=9))


def test_mixed_graph_through_the_command_line(tmp_path):
    """redy evaluate --onnx on the issue's mixed graph (grouped conv, asymmetric pads,
    Clip, Concat, Gemm, GlobalAveragePool) with .npz data."""
    model = og.mixed(size=12, batch=2)
    _check(model)
    onnx.save(model, tmp_path / "mixed.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (16, 12, 12, 4), dtype=np.uint8),
             labels=rng.integers(0, 5, 16), train_images=rng.integers(0, 256, (16, 12, 12, 4),
                                                                      dtype=np.uint8),
             train_labels=rng.integers(0, 5, 16))
    r = subprocess.run([sys.executable, "-m", "redy_jax.cli", "compare", "--onnx",
                        str(tmp_path / "mixed.onnx"), "--data", str(tmp_path / "d.npz"),
                        "--policies", "static,lzs,redy", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = {x["policy"]: x for x in json.loads(r.stdout)["results"]}
    assert res["static"]["images"] == 16
    assert res["lzs"]["accuracy"] == res["static"]["accuracy"]
    assert res["redy"]["chip_energy_pj_per_image"] <= res["lzs"]["chip_energy_pj_per_image"] * 1.05
