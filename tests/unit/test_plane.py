"""service/core/plane.py and service/core/routing.py with versions whose models are Python functions: which version answers (named, canary share, routing key), the tensor checks, and the shadow copy that never touches an answer."""

import asyncio

import numpy as np
import pytest

import artifacts
from service.core.admission import Admission
from service.core.errors import Kind, ServingError
from service.core.plane import DONE, FAILED, SKIPPED, DataPlane
from service.core.protocol import ArrayInput, InferRequest, RequestedOutput
from service.core.routing import CANARY, DEFAULT, PINNED, Route, key_point
from service.inference.batching import Batcher
from service.inference.runtime import LoadedModel
from service.inference.versions import Version

LINEAR = artifacts.model(artifacts.TEMPERATURE_LINEAR)
MNIST = artifacts.model(artifacts.MNIST)


def version(model: artifacts.Model, tag: str, predict, batched: bool = False) -> Version:
    metadata = {"name": model.name, "version": tag, "inputs": [model.task.input.as_dict()],
                "outputs": [model.task.output.as_dict()]}
    if model.task == artifacts.DIGITS:
        metadata["inputs"][0]["range"] = [0.0, 1.0]
    v = Version(model, LoadedModel(model.name, tag, metadata, "onnx", "cpu", predict))
    if batched:
        v.batcher = Batcher(predict, 64, tag, observe=v._observe)
    return v


def offset(by: float):
    return lambda x: x + by


A, B = "a" * 16, "b" * 16


def route(canary: float = 0.0, shadow: Version | None = None, share: float = 0.0, draw=None) -> Route:
    a, b = version(LINEAR, A, offset(1)), version(LINEAR, B, offset(2))
    kwargs = {"draw": draw} if draw else {}
    return Route(LINEAR.name, a, {A: a, B: b} | ({shadow.version: shadow} if shadow else {}),
                 canary=b if canary else None, weight=canary, shadow=shadow, share=share, **kwargs)


def plane(*routes: Route, **kwargs) -> DataPlane:
    p = DataPlane(**kwargs)
    p.routes = {r.model: r for r in routes}
    return p


def readings(values, model=LINEAR.name, version=None, key=None, **kwargs) -> InferRequest:
    x = np.asarray(values, np.float64)
    return InferRequest(model, version, [ArrayInput("readings", "FP64", [len(values), 1], x)], key=key, **kwargs)


# --------------------------------------------------------------------------------------------- routing


def test_a_named_version_answers_and_an_unknown_one_is_404_naming_those_loaded():
    r = route(canary=0.5)
    assert r.choose(B) == (r.versions[B], PINNED)
    with pytest.raises(ServingError) as e:
        r.choose("c" * 16)
    assert e.value.kind is Kind.NOT_FOUND
    assert str(e.value) == f"model 'temperature-linear' has no version '{'c' * 16}' loaded; it serves {A} (default), {B} (canary)"


def test_the_canary_takes_its_weight_of_unaddressed_requests():
    draws = iter(np.random.default_rng(7).random(10_000))
    r = route(canary=0.1, draw=lambda: next(draws))
    roles = [r.choose(None)[1] for _ in range(10_000)]
    assert 0.08 <= roles.count(CANARY) / 10_000 <= 0.12 and set(roles) == {DEFAULT, CANARY}


def test_a_routing_key_keeps_a_client_on_one_side_whatever_the_draw():
    r = route(canary=0.5, draw=lambda: pytest.fail("a keyed request must not draw"))
    for key in (f"client-{i}" for i in range(200)):
        first = r.choose(None, key)[1]
        assert {r.choose(None, key)[1] for _ in range(5)} == {first}
        assert first == (CANARY if key_point(LINEAR.name, key) < 0.5 else DEFAULT)
    shares = [key_point(LINEAR.name, f"client-{i}") < 0.1 for i in range(10_000)]
    assert 0.08 <= np.mean(shares) <= 0.12  # the hash spreads keys evenly
    assert key_point("mnist-fc", "k") != key_point("temperature-linear", "k")  # per model


def test_the_key_point_is_a_stable_hash_not_pythons():
    assert key_point("mnist-fc", "client-42") == 0.49400255679778693  # the same in every process and replica


def test_shadow_share_is_drawn_among_the_defaults_requests_only():
    s = version(LINEAR, "c" * 16, offset(3))
    draws = iter([0.1, 0.9] * 10)
    r = route(shadow=s, share=0.5, draw=lambda: next(draws))
    assert [r.shadows(DEFAULT) for _ in range(4)] == [s, None, s, None]
    assert r.shadows(CANARY) is None and r.shadows(PINNED) is None
    assert route(shadow=s, share=1.0).shadows(DEFAULT) is s


# --------------------------------------------------------------------------------------------- the plane


def test_predict_answers_with_the_chosen_version_and_counts_it():
    seen = []
    p = plane(route(), on_request=lambda v, role, ok, s: seen.append((v.version, role, ok)))
    answered, y = asyncio.run(p.predict(LINEAR.name, None, np.array([[1.0]])))
    assert (answered.version, y.tolist()) == (A, [[2.0]])
    answered, y = asyncio.run(p.predict(LINEAR.name, B, np.array([[1.0]])))
    assert (answered.version, y.tolist()) == (B, [[3.0]])
    assert seen == [(A, DEFAULT, True), (B, PINNED, True)]


def test_an_unloaded_plane_is_503_and_an_unknown_model_404():
    with pytest.raises(ServingError) as e:
        DataPlane().route(LINEAR.name)
    assert e.value.kind is Kind.UNAVAILABLE
    with pytest.raises(ServingError) as e:
        plane(route()).route("resnet")
    assert e.value.kind is Kind.NOT_FOUND and "the models are temperature-linear" in str(e.value)
    with pytest.raises(ServingError) as e:
        plane(route()).route(artifacts.TEMPERATURE_MLP)  # a registry model not loaded
    assert e.value.kind is Kind.NOT_FOUND and "is not loaded" in str(e.value)


def test_infer_checks_the_declared_tensor_before_reading_values():
    class Exploding(ArrayInput):
        def as_numpy(self):
            raise AssertionError("values read before the declaration was checked")

    p = plane(route())
    for inputs, message in (
        ([], "takes exactly one input"),
        ([Exploding("images", "FP64", [1, 1], None)], "input is 'readings', got 'images'"),
        ([Exploding("readings", "FP32", [1, 1], None)], "is FP64, got 'FP32'"),
        ([Exploding("readings", "FP64", [1, 2], None)], "expected [-1, 1]"),
        ([Exploding("readings", "FP64", [10_001, 1], None)], "must be 1 to 10,000"),
    ):
        with pytest.raises(ServingError) as e:
            asyncio.run(p.infer(InferRequest(LINEAR.name, None, inputs)))
        assert message in str(e.value), str(e.value)


def test_infer_refuses_values_that_are_not_finite_or_out_of_range():
    with pytest.raises(ServingError, match=r"inputs\[0\]\[1\]: expected a finite number, got NaN"):
        asyncio.run(plane(route()).infer(readings([1.0, float("nan")])))
    digits = Route(MNIST.name, d := version(MNIST, A, lambda x: np.full((len(x), 10), 0.1, np.float32)), {A: d})
    x = np.zeros((1, 1, 28, 28), np.float32)
    x[0, 0, 0, 3] = 255
    request = InferRequest(MNIST.name, None, [ArrayInput("images", "FP32", [1, 1, 28, 28], x.ravel())])
    with pytest.raises(ServingError, match=r"\[3\]: 255 is outside the model's input range \[0, 1\] \(divide"):
        asyncio.run(plane(digits).infer(request))


def test_infer_answers_the_outputs_asked_each_once():
    p = plane(route())
    answer = asyncio.run(p.infer(readings([1.0, 2.0], id="r1", outputs=[RequestedOutput("celsius", True)])))
    assert (answer.model, answer.version, answer.id) == (LINEAR.name, A, "r1")
    [out] = answer.outputs
    assert (out.name, out.datatype, out.binary, out.array.tolist()) == ("celsius", "FP64", True, [[2.0], [3.0]])
    for outputs, message in (([RequestedOutput("x")], "has no output 'x'"),
                             ([RequestedOutput("celsius")] * 2, "asked for twice")):
        with pytest.raises(ServingError, match=message):
            asyncio.run(p.infer(readings([1.0], outputs=outputs)))


# --------------------------------------------------------------------------------------------- shadow


def run_with_shadow(shadow_predict, admission: Admission | None = None, calls: int = 1):
    """Predict `calls` times with a shadow at share 1; (answers, what on_shadow saw) once every copy is done."""
    seen = []
    shadow = version(LINEAR, "c" * 16, shadow_predict, batched=True)
    admission = admission or Admission(0, 32, 512, 1 << 20)
    p = plane(route(shadow=shadow, share=1.0), background=admission.background,
              on_shadow=lambda answered, s, y, out, outcome, seconds: seen.append(
                  (answered.version, s.version, outcome, None if out is None else out.tolist())))

    async def go():
        answers = [await p.predict(LINEAR.name, None, np.array([[1.0]])) for _ in range(calls)]
        while p.shadows:  # the copies run after the answers, as tasks of their own
            await asyncio.gather(*p.shadows, return_exceptions=True)
        return answers

    return asyncio.run(go()), seen, admission


def test_a_shadow_runs_a_copy_after_the_answer_and_is_compared():
    answers, seen, admission = run_with_shadow(offset(10))
    assert [(v.version, y.tolist()) for v, y in answers] == [(A, [[2.0]])]
    assert seen == [(A, "c" * 16, DONE, [[11.0]])]
    assert admission.background_places == 0


def test_a_shadow_that_raises_never_fails_an_answer():
    def broken(x):
        raise RuntimeError("the shadow's model is broken")

    answers, seen, _ = run_with_shadow(broken, calls=3)
    assert [y.tolist() for _, y in answers] == [[[2.0]]] * 3
    assert [outcome for _, _, outcome, _ in seen] == [FAILED] * 3


def test_a_slow_shadow_is_skipped_once_background_places_are_taken_and_answers_go_on():
    gate = __import__("threading").Event()

    def slow(x):
        gate.wait(10)  # held until every answer is out
        return x + 10

    admission = Admission(0, concurrency=4, max_requests=512, max_bytes=1 << 20)  # one background place
    seen = []
    shadow = version(LINEAR, "c" * 16, slow, batched=True)
    p = plane(route(shadow=shadow, share=1.0), background=admission.background,
              on_shadow=lambda answered, s, y, out, outcome, seconds: seen.append(outcome))

    async def go():
        answers = [await p.predict(LINEAR.name, None, np.array([[1.0]])) for _ in range(5)]
        assert seen == [SKIPPED] * 4  # the first copy holds the one place; the other four are skipped at once
        gate.set()
        await asyncio.gather(*p.shadows)
        return answers

    answers = asyncio.run(go())
    assert [y.tolist() for _, y in answers] == [[[2.0]]] * 5 and seen == [SKIPPED] * 4 + [DONE]


def test_no_shadow_while_requests_wait_for_a_place():
    admission = Admission(0, concurrency=1, max_requests=512, max_bytes=1 << 20)

    async def go():
        held = admission.enter(0)
        async with admission.place(held):
            waiting = asyncio.ensure_future(admission.place(admission.enter(0)).__aenter__())
            await asyncio.sleep(0)  # one loop turn: the second request is queued
            assert admission.background() is None
            waiting.cancel()
    asyncio.run(go())


# --------------------------------------------------------------------------------------------- versions


def test_a_retired_version_finishes_what_it_holds_then_releases_its_thread():
    gate = __import__("threading").Event()
    v = version(MNIST, A, lambda x: (gate.wait(10), np.full((len(x), 10), 0.1, np.float32))[1], batched=True)

    async def go():
        held = asyncio.ensure_future(v.predict(np.zeros((1, 1, 28, 28), np.float32)))
        while not v.inflight:
            await asyncio.sleep(0)
        v.retire()
        still_open = not v.batcher._executor._shutdown
        gate.set()
        y = await held
        return still_open, y, v.batcher._executor._shutdown

    still_open, y, closed = asyncio.run(go())
    assert still_open and y.shape == (1, 10) and closed


@pytest.mark.parametrize("answer,message", [
    (lambda x: np.full((len(x), 10), np.nan, np.float32), "is not finite"),
    (lambda x: np.full((len(x), 10), 0.5, np.float32), "is not probabilities"),
    (lambda x: np.full((len(x), 9), 0.1, np.float32), "has shape [2, 9], expected [2, 10]"),
])
def test_the_probe_refuses_a_version_that_answers_nonsense(answer, message):
    from service.inference.versions import probe

    with pytest.raises(artifacts.ArtifactError, match=message.replace("[", r"\[").replace("]", r"\]")):
        probe(version(MNIST, A, answer))
    probe(version(MNIST, A, lambda x: np.full((len(x), 10), 0.1, np.float32)))  # probabilities: passes
    with pytest.raises(artifacts.ArtifactError, match="out of range"):
        probe(version(LINEAR, A, lambda x: x * 1e9))
