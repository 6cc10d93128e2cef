"""The host-side Study: ask/tell, optimize, failures, budgets, in memory."""

import threading
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo.study import Study, Trial, TrialState, state_from_bytes, state_to_bytes
from jaxhpo.study.serialize import StateChecksumError, StateFormatError
from jaxhpo.study.progress import PlainProgress, progress_bar, report_every
from jaxhpo.strategies.base import Strategy, initial_best

SPACE = jaxhpo.Space(
    x=jaxhpo.Float(-2.0, 2.0),
    lr=jaxhpo.Float(1e-4, 1e-1, log=True),
    n=jaxhpo.Int(1, 5),
    kind=jaxhpo.Categorical(["a", "b", "c"]),
)


def f(p):
    return (p["x"] - 0.3) ** 2 + (p["kind"] != "b") + 0.1 * p["n"]


class CenterState(NamedTuple):
    params: dict
    best_x: jax.Array
    best_value: jax.Array
    generation: jax.Array
    center: jax.Array


class Center(Strategy):
    """Samples around the best point told so far: proposals depend on values."""

    def _init(self, key, params):
        return CenterState(params=params, center=jnp.full((self.dim,), 0.5, jnp.float32),
                           **initial_best(self.dim))

    def _ask(self, key, state):
        return state.center + 0.1 * jax.random.normal(key, (self.popsize, self.dim)), state

    def _tell(self, state, x, values):
        i = jnp.argmin(values)
        return state._replace(center=jnp.where(values[i] < state.best_value, x[i], state.center))


def test_ask_returns_python_dicts_and_tell_advances_the_generation():
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=1)
    batch = study.ask()
    assert len(batch) == 4
    for p in batch:
        assert set(p) == set(SPACE.names)
        assert isinstance(p["x"], float) and -2 <= p["x"] <= 2
        assert isinstance(p["n"], int) and p["kind"] in ("a", "b", "c")
    assert study.generation == 0
    values = [f(p) for p in batch]
    study.tell(values)
    assert study.generation == 1
    assert study.best_value == min(values)
    assert study.best_params == batch[int(np.argmin(values))]
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE and t.generation == 0 for t in trials)
    assert [t.value for t in trials] == values
    assert [t.number for t in study.get_trials(number=np.int64(2))] == [2]
    with pytest.raises(TypeError, match="error must be the failure's text"):
        study.tell(0, None, error=3)
    for bad in ("0", 0.0, True, -1):
        with pytest.raises(ValueError, match="number must be a trial number"):
            study.get_trials(number=bad)
    # the strategy state learned the best value (float32)
    assert float(study.state.best_value) == pytest.approx(min(values), rel=1e-6)


def test_same_seed_same_proposals_and_values_change_a_value_dependent_strategy():
    def run(seed, obj):
        s = Study(SPACE, Center(SPACE, 3), seed=seed)
        s.optimize(obj, num_generations=4, progress=False)
        return [t.params for t in s.trials]

    a, b = run(0, f), run(0, f)
    assert a == b and len(a) == 12
    assert run(1, f) != a
    assert run(0, lambda p: -f(p))[3:] != a[3:]  # later generations follow the values
    assert run(0, lambda p: -f(p))[:3] == a[:3]


def test_per_trial_tell_in_any_order_and_tell_only_when_the_generation_is_done():
    study = Study(SPACE, Center(SPACE, 3), seed=0)
    trials = study.ask_trials()
    assert all(isinstance(t, Trial) and t.state == TrialState.RUNNING for t in trials)
    with pytest.raises(RuntimeError, match="running"):
        study.ask()
    study.tell(trials[2], 1.0)
    study.tell(trials[0].number, 3.0)
    assert study.generation == 0
    with pytest.raises(ValueError, match="complete"):
        study.tell(trials[0].number, 2.0)
    study.tell(trials[1], None, error="diverged")
    assert study.generation == 1
    t1 = study.get_trials()[1]
    assert t1.state == TrialState.FAILED and t1.value is None and t1.error == "diverged"
    with pytest.raises(ValueError, match="no trial 99"):
        study.tell(99, 1.0)
    with pytest.raises(TypeError, match="trial"):
        study.tell("x", 1.0)


def test_ask_in_parts_and_tell_wrong_length():
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 5), seed=0)
    first = study.ask(2)
    rest = study.ask()
    assert len(first) == 2 and len(rest) == 3
    with pytest.raises(ValueError, match="3 configurations"):
        study.tell([1.0, 2.0])
    study.tell([1.0, 2.0, 3.0])
    assert study.generation == 0  # the first two are still running
    with pytest.raises(ValueError, match="n must be"):
        study.ask(0)


def test_returns_of_other_numeric_types():
    # float8 and object 0-d arrays are numbers; another library's bool or
    # complex scalar (by its dtype's name, as a PyTorch tensor's) is not.
    class Tensor:
        def __init__(self, dtype, value):
            self.dtype, self.value = dtype, value

        def __float__(self):
            if self.value is None:  # as PyTorch's float() of a value it cannot convert
                raise RuntimeError("value cannot be converted to type double without overflow")
            return float(self.value)

    returns = [jnp.asarray(1.5, jnp.float8_e4m3fn), np.array(2.5, dtype=object), Tensor("torch.float32", 3.5),
               Tensor("torch.bool", True), Tensor("torch.complex64", 1.0), Tensor("torch.float32", None),
               np.array(True, dtype=object), np.array("2.5", dtype=object)]
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 8), seed=0)
    values = iter(returns)
    with pytest.warns(RuntimeWarning, match="failed"):
        study.optimize(lambda p: next(values), num_trials=8, progress=False)
    trials = study.trials
    assert [t.value for t in trials[:3]] == [1.5, 2.5, 3.5]
    assert [t.state for t in trials[3:]] == ["failed"] * 5
    assert all(t.error.startswith("objective returned") and t.error.endswith("not a number") for t in trials[3:])
    assert trials[5].error == "objective returned a Tensor, not a number"


def test_optimize_records_failures_and_goes_on():
    calls = []

    def objective(p):
        calls.append(p)
        k = len(calls)
        if k % 5 == 1:
            raise ValueError(f"boom {k}")
        if k % 5 == 2:
            return float("nan")
        if k % 5 == 3:
            # a 0-d array of booleans (a comparison returned by mistake) or of text is no number either
            # a complex number too: float() of NumPy's keeps its real part
            return ("not a number", np.array(True), np.array("1.5"), np.complex128(1.0 + 2.0j))[(k // 5) % 4]
        return f(p)

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=0)
    # the first failure of a call is shown once (a mistake would fail them all)
    with pytest.warns(RuntimeWarning, match="trial 0 failed: ValueError: boom 1. Failed trials are recorded") as seen:
        study.optimize(objective, num_trials=20, progress=False)
    assert len([w for w in seen if issubclass(w.category, RuntimeWarning)]) == 1
    trials = study.trials
    assert len(trials) == 20 and len(calls) == 20
    failed = [t for t in trials if t.state == TrialState.FAILED]
    assert len(failed) == 12
    assert all(t.value is None for t in failed)
    errors = [t.error for t in failed]
    assert "ValueError: boom 1" in errors
    assert "objective returned nan" in errors
    assert sum("not a number" in e for e in errors) == 4
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert study.best_value == min(t.value for t in complete)
    assert study.generation == 5


def test_uncaught_exception_is_recorded_and_raised():
    def objective(p):
        raise KeyError("bad")

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    with pytest.raises(KeyError):
        study.optimize(objective, num_trials=5, catch=ValueError, progress=False)
    (t,) = study.get_trials((TrialState.FAILED,))
    assert "KeyError" in t.error
    with pytest.raises(ValueError, match="no complete trial"):
        study.best_value


def test_keyboard_interrupt_leaves_the_trial_unfinished():
    def objective(p):
        raise KeyboardInterrupt

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, num_trials=5, progress=False)
    assert [t.state for t in study.trials] == [TrialState.WAITING, TrialState.WAITING]
    study.optimize(f, num_trials=2, progress=False)  # the same two run now
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


def test_an_interrupt_while_the_generation_is_told_sends_its_last_trial_back():
    study = Study(SPACE, Center(SPACE, 2), seed=0)
    study._warm()  # compiled, as the first claim would
    real, interrupts = study._tell, [1]

    def tell(*args):  # Ctrl-C during the strategy's tell, inside the last trial's transaction
        if interrupts[0]:
            interrupts[0] -= 1
            raise KeyboardInterrupt
        return real(*args)

    study._tell = tell
    with pytest.raises(KeyboardInterrupt):
        study.optimize(f, num_trials=4, progress=False)
    # The last trial's finish and the tell were one transaction, rolled back:
    # the trial waits to run again (not left running, which no worker of this
    # process would ever claim).
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.WAITING]
    study.optimize(f, num_trials=3, progress=False)
    assert study.generation == 2 and [t.state for t in study.trials] == [TrialState.COMPLETE] * 4


def test_optimize_refuses_to_wait_on_trials_asked_by_hand():
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 3), seed=0)
    asked = study.ask_trials(2)
    with pytest.raises(RuntimeError, match=r"waits on trial\(s\) \[0, 1\], asked from this study and not told"):
        study.optimize(f, num_trials=3, progress=False, n_jobs=2)
    assert study.trials[2].state == TrialState.COMPLETE  # the free trial ran
    study.tell([f(t.params) for t in asked])
    study.optimize(f, num_trials=3, progress=False, n_jobs=2)
    assert study.generation == 2


def test_tell_checks_the_trial_and_the_value():
    a = Study(SPACE, jaxhpo.RandomSearch(SPACE, 3), seed=0, name="a")
    b = Study(SPACE, jaxhpo.RandomSearch(SPACE, 3), seed=1, name="b")
    ta, tb = a.ask_trials(), b.ask_trials()
    with pytest.raises(ValueError, match="trial 0 belongs to study 'b', not to 'a'"):
        a.tell(tb[0], 1.0)
    other = Study(SPACE, jaxhpo.RandomSearch(SPACE, 3), seed=2, name="a")  # same name, other storage
    with pytest.raises(ValueError, match="other parameters than the Trial given"):
        a.tell(other.ask_trials()[0], 1.0)
    with pytest.raises(TypeError, match="tell: value must be a real number, got '0.5'"):
        a.tell(ta[0], "0.5")
    a.tell(ta[0], np.float32(0.5))
    a.tell(ta[1], jnp.asarray(0.25))
    a.tell(ta[2], 10**400)  # beyond float: not finite, so failed
    assert [t.value for t in a.trials] == [0.5, 0.25, None]
    # (named as told: no objective returned it)
    assert a.trials[2].error == "tell was given an integer of 401 digits, beyond float's range"
    assert [t.number for t in a.get_trials("complete")] == [0, 1]
    with pytest.raises(TypeError, match="callbacks must be a list of callables"):
        a.optimize(f, num_trials=1, callbacks=lambda s, t: None)
    with pytest.raises(TypeError, match="progress must be True or False"):
        a.optimize(f, num_trials=1, progress="no")
    for bad in (-1.0, 2.0, 0, -2):  # -1 (every core) as an integer only
        with pytest.raises(ValueError, match="n_jobs must be a positive integer or -1"):
            a.optimize(f, num_trials=1, n_jobs=bad)


def test_jax_arrays_serve_as_values_trial_numbers_and_steps():
    """A training loop's numbers are JAX arrays: a batch of values, a trial number and a
    step given as JAX (or NumPy) arrays are taken as the Python numbers they hold."""
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 3), seed=0)
    study.ask()
    study.tell(jnp.array([1.0, 2.0, 3.0]))
    trial = study.ask_trials(1)[0]
    study.report(jnp.int32(trial.number), 0.5, jnp.int32(4))
    study.report(np.int64(trial.number), 0.25, np.int64(5))
    study.tell(jnp.int32(trial.number), jnp.float32(0.125))
    assert [t.value for t in study.trials[:4]] == [1.0, 2.0, 3.0, 0.125]
    assert study.trials[3].intermediate_values == {4: 0.5, 5: 0.25}
    with pytest.raises(TypeError, match="got a 0-d array"):
        study.tell(jnp.float32(1.0))
    for bad in (jnp.float32(4.0), jnp.array([4])):
        with pytest.raises(TypeError, match="trial must be a Trial or a trial number"):
            study.tell(bad, 1.0)
    running = study.ask_trials(1)[0]
    with pytest.raises(ValueError, match="step must be an integer"):
        study.report(running, 0.5, jnp.float32(1.0))


def test_maximize_stores_user_values_and_negates_for_the_strategy():
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=0, maximize=True)
    study.optimize(f, num_generations=3, progress=False)
    values = [t.value for t in study.trials]
    assert study.best_value == max(values)
    assert study.best_trial.value == max(values)
    assert float(study.state.best_value) == pytest.approx(-max(values), rel=1e-6)


def test_budgets():
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=0)
    study.optimize(f, num_trials=6, progress=False)
    assert len(study.get_trials(("complete",))) == 6 and study.generation == 1
    study.optimize(f, num_generations=2, progress=False)  # finishes gen 1, then gen 2
    assert study.generation == 3 and len(study.trials) == 12
    study.optimize(f, max_trials=10, progress=False)  # already past the total: nothing
    assert len(study.trials) == 12
    study.optimize(f, max_trials=14, progress=False)
    assert len(study.get_trials(("complete",))) == 14
    with pytest.raises(ValueError, match="num_trials, num_generations"):
        study.optimize(f, progress=False)
    for bad in (dict(num_trials=0), dict(num_generations=-1), dict(max_trials=1.5), dict(n_jobs=0),
                dict(timeout=0, num_trials=1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            study.optimize(f, progress=False, **bad)
    with pytest.raises(TypeError, match="catch"):
        study.optimize(f, num_trials=1, catch=("x",), progress=False)
    with pytest.raises(TypeError, match="objective"):
        study.optimize(3, num_trials=1, progress=False)


def test_grid_runs_every_point_once_then_is_exhausted():
    space = jaxhpo.Space(a=jaxhpo.Int(0, 4), b=jaxhpo.Categorical(["u", "v"]))  # 10 points
    study = Study(space, jaxhpo.GridSearch(space, 4), seed=0)
    study.optimize(lambda p: p["a"] + (p["b"] == "v"), progress=False)  # no budget: the whole grid
    seen = sorted((t.params["a"], t.params["b"]) for t in study.trials)
    assert seen == sorted((a, b) for a in range(5) for b in "uv")
    assert study.exhausted and study.ask() == []
    assert study.best_value == 0


def test_threads_run_each_trial_exactly_once():
    seen, lock = [], threading.Lock()

    def objective(p):
        with lock:
            seen.append(p["x"])
        return f(p)

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 3), seed=0)
    study.optimize(objective, num_trials=30, n_jobs=4, progress=False)
    xs = [t.params["x"] for t in study.trials]
    assert len(seen) == 30 and sorted(seen) == sorted(xs) and len(set(xs)) == 30
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    ref = Study(SPACE, jaxhpo.RandomSearch(SPACE, 3), seed=0)
    ref.optimize(f, num_trials=30, progress=False)
    assert [t.params for t in ref.trials] == [t.params for t in study.trials]


def test_conditional_space_and_non_json_labels():
    space = jaxhpo.Space(
        opt=jaxhpo.Categorical([("sgd", 1), ("adam", 2)]),
        mom=jaxhpo.Float(0.0, 0.9, when={"opt": [("sgd", 1)]}),
    )
    study = Study(space, jaxhpo.RandomSearch(space, 8), seed=3)
    study.optimize(lambda p: p.get("mom", 0.5), num_trials=8, progress=False)
    for t in study.trials:
        assert t.params["opt"] in (("sgd", 1), ("adam", 2))
        assert ("mom" in t.params) == (t.params["opt"] == ("sgd", 1))


def test_a_0d_integer_array_is_a_seed():
    ask = [Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=seed).ask() for seed in (3, np.array(3), jnp.int32(3))]
    assert ask[0] == ask[1] == ask[2]
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=np.array(3.0))


def test_callbacks_and_records():
    got = []
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    study.optimize(f, num_trials=4, progress=False, callbacks=[lambda s, t: got.append((s, t))])
    assert [t.number for _, t in got] == [0, 1, 2, 3] and got[0][0] is study
    assert all(t.state == TrialState.COMPLETE and t.value == f(t.params) for _, t in got)
    recs = study.to_records()
    assert len(recs) == 4 and recs[0]["params_kind"] == study.trials[0].params["kind"]
    assert recs[0]["duration"] >= 0


def test_construction_errors_name_the_parameter():
    rs = jaxhpo.RandomSearch(SPACE, 2)
    with pytest.raises(TypeError, match="space"):
        Study({"x": 1}, rs)
    with pytest.raises(TypeError, match="strategy"):
        Study(SPACE, "random")
    other = jaxhpo.Space(y=jaxhpo.Float(0, 1))
    with pytest.raises(ValueError, match="different space"):
        Study(other, rs)
    with pytest.raises(ValueError, match="seed"):
        Study(SPACE, rs, seed=-1)
    with pytest.raises(TypeError, match="maximize"):
        Study(SPACE, rs, maximize="yes")
    with pytest.raises(TypeError, match="name"):
        Study(SPACE, rs, name="")
    with pytest.raises(ValueError, match="stale_after"):
        Study(SPACE, rs, stale_after=0)
    with pytest.raises(TypeError, match="storage"):
        Study(SPACE, rs, storage=3)


def test_state_roundtrip_and_mismatch():
    key = jax.random.key(0)
    state = Center(SPACE, 3).init(key)
    state = state._replace(params={"k": jax.random.key(5), "w": jnp.arange(3.0)})
    back = state_from_bytes(state_to_bytes(state), state)
    assert np.array_equal(back.center, state.center)
    assert np.array_equal(jax.random.key_data(back.params["k"]), jax.random.key_data(state.params["k"]))
    # a template of shapes only (jax.eval_shape) takes typed keys too
    shaped = state_from_bytes(state_to_bytes(state), jax.eval_shape(lambda: state))
    assert np.array_equal(jax.random.key_data(shaped.params["k"]), jax.random.key_data(state.params["k"]))
    with pytest.raises(StateFormatError, match="does not fit"):
        state_from_bytes(state_to_bytes(state), jaxhpo.RandomSearch(SPACE, 3).init(key))
    with pytest.raises(StateFormatError):
        state_from_bytes(b"garbage", state)
    with pytest.raises(StateChecksumError, match="fails its checksum"):
        state_from_bytes(state_to_bytes(state)[:-3], state)
    data = bytearray(state_to_bytes(state))
    data[-20] ^= 1  # a flipped bit in the leaves' bytes
    with pytest.raises(StateChecksumError, match="fails its checksum"):
        state_from_bytes(bytes(data), state)
    # A version byte damaged into format 1's is damage, not an old state (a Study rebuilds it).
    data = bytearray(state_to_bytes(state))
    data[12] ^= 0x03
    with pytest.raises(StateChecksumError, match="first bytes changed"):
        state_from_bytes(bytes(data), state)
    # States written before the digest (format 1) still read.
    from jaxhpo.study.serialize import _MAGIC_V1
    old = _MAGIC_V1 + state_to_bytes(state)[len(_MAGIC_V1):-16]
    assert np.array_equal(state_from_bytes(old, state).center, state.center)
    with pytest.raises(StateFormatError, match="truncated"):
        state_from_bytes(old[:-3], state)
    with pytest.raises(StateFormatError, match="damaged header"):  # (NumPy read ",loat32" as Python: SyntaxError)
        state_from_bytes(old.replace(b'"dtype":"float32"', b'"dtype":",loat32"', 1), state)
    # keys of another implementation with the same data shape are refused, not reinterpreted
    rbg = state._replace(params={"k": jax.random.key(5, impl="rbg"), "w": jnp.arange(3.0)})
    unsafe = state._replace(params={"k": jax.random.key(5, impl="unsafe_rbg"), "w": jnp.arange(3.0)})
    with pytest.raises(StateFormatError, match=r"^stored strategy state field .*holds rbg keys; this process makes unsafe_rbg"):
        state_from_bytes(state_to_bytes(rbg), unsafe)
    with pytest.raises(StateFormatError, match="holds rbg keys; this process makes unsafe_rbg"):
        state_from_bytes(state_to_bytes(rbg), jax.eval_shape(lambda: unsafe))
    # A CMA-ES state stored with x64 off reads back with it on (its floats are the default float),
    # and the other way round; other dtype changes are refused.
    cmaes = jaxhpo.CMAES(jaxhpo.Space(u=jaxhpo.Float(0.0, 1.0), v=jaxhpo.Float(0.0, 1.0)), 4)
    narrow = cmaes.init(key)
    with jax.enable_x64(True):
        wide = cmaes.init(key)
        back = state_from_bytes(state_to_bytes(narrow), wide)
        assert back.params["sigma0"].dtype == np.float64 and back.mean.dtype == wide.mean.dtype
    again = state_from_bytes(state_to_bytes(wide), narrow)
    assert again.mean.dtype == narrow.mean.dtype and np.array_equal(again.mean, narrow.mean)
    with pytest.raises(StateFormatError, match="dtype"):
        state_from_bytes(state_to_bytes(state._replace(center=state.center.astype(jnp.int32))), state)
    # a header of the wrong make (entries without a dtype, or not objects) is damage too
    import json
    from jaxhpo.study.serialize import _MAGIC
    from jaxhpo.study.serialize import _digest
    data, m = state_to_bytes(state)[:-16], len(_MAGIC)
    n = int.from_bytes(data[m:m + 8], "little")
    header = json.loads(data[m + 8:m + 8 + n])
    for bad in ([{k: v for k, v in h.items() if k != "dtype"} for h in header], [1 for _ in header]):
        text = json.dumps(bad).encode()
        forged = _MAGIC + len(text).to_bytes(8, "little") + text + data[m + 8 + n:]
        forged += _digest(forged)
        with pytest.raises(StateFormatError, match="damaged header"):
            state_from_bytes(forged, state)


def test_plain_progress_and_bar(capsys):
    p = PlainProgress(10, interval=0.0)
    p.update(3, best=0.25)
    p.update(1, failed=1)
    p.close()
    err = capsys.readouterr().err
    assert "trials 4/10" in err and "best 0.25" in err and "failed 1" in err
    bar = progress_bar(5, enabled=True)
    bar.update(1, best=1.0)
    bar.close()
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    study.optimize(f, num_trials=4, progress=True)
    err = capsys.readouterr().err
    assert "4/4" in err


def test_report_every_inside_a_compiled_loop():
    got = []

    @jax.jit
    def loop(x):
        def body(c, g):
            report_every(np.int64(3), g, c, total=9,  # any integer type, as progress_every takes
                         report=lambda gen, best, total: got.append((int(gen), float(best))))
            return c * 0.5, None
        return jax.lax.scan(body, x, jnp.arange(1, 10))[0]

    jax.block_until_ready(loop(8.0))
    jax.effects_barrier()
    assert got == [(3, 2.0), (6, 0.25), (9, 8.0 / 2 ** 8)]
    for bad in (-1, False, 2.5):
        with pytest.raises(ValueError, match="every must be a positive integer, 0 or None"):
            report_every(bad, 0, 0.0)


def test_sepcmaes_studies_reopen_and_spaces_show_their_conditions(tmp_path):
    path = str(tmp_path / "sep.db")
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0), y=jaxhpo.Float(0.0, 1.0))
    study = Study(space, jaxhpo.SepCMAES(space, 4), seed=0, storage=path, name="s")
    study.optimize(lambda p: (p["x"] - 0.3) ** 2 + p["y"], num_trials=4, progress=False)
    study.close()
    again = Study.load(path, "s")
    assert type(again.strategy) is jaxhpo.SepCMAES and again.strategy == study.strategy
    again.close()
    with pytest.raises(ValueError, match="SepCMAES is separable"):
        jaxhpo.SepCMAES(space, 4, separable=False)
    # A space kept by its repr (labels JSON cannot hold) keeps its conditions in it.
    a = jaxhpo.Space(s=jaxhpo.Categorical([(1, 2), "flat"]), x=jaxhpo.Float(0, 1, when={"s": [(1, 2)]}))
    b = jaxhpo.Space(s=jaxhpo.Categorical([(1, 2), "flat"]), x=jaxhpo.Float(0, 1, when={"s": ["flat"]}))
    assert repr(a) != repr(b) and "when={'s': [(1, 2)]}" in repr(a)


def test_hypervolume_of_four_objectives_draws_from_the_seed():
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0), y=jaxhpo.Float(0.0, 1.0))
    study = Study(space, jaxhpo.NSGA2(space, 4, num_objectives=4), seed=3)
    study.optimize(lambda p: [p["x"], 1 - p["x"], p["y"], 1 - p["y"]], num_trials=8, progress=False)
    hv = study.hypervolume()
    assert hv > 0 and study.hypervolume() == hv == study.hypervolume(key=3)
    # Against the exact volume, by inclusion-exclusion over the front's boxes,
    # within 4 standard errors of a 102400-sample estimate in the front's box.
    import itertools
    import math

    from jaxhpo import pareto
    _, values = study.pareto_front()
    values = np.asarray(values, np.float32).astype(np.float64)
    ref = pareto.default_ref_point(values.astype(np.float32)).astype(np.float64)
    exact = 0.0
    for r in range(1, len(values) + 1):
        for subset in itertools.combinations(values, r):
            exact += (-1) ** (r + 1) * np.prod(np.maximum(ref - np.max(subset, axis=0), 0.0))
    box = np.prod(ref - values.min(axis=0))
    share = exact / box
    assert abs(hv - exact) <= 4 * box * math.sqrt(share * (1 - share) / 102400) + 1e-9
    with pytest.raises(TypeError, match="ref_point must be 4 numbers"):
        study.hypervolume("abcd")


def test_the_progress_bars_total_counts_only_the_trials_left_to_run(monkeypatch):
    import jaxhpo.study.study as study_module

    totals = []

    class Bar:
        def __init__(self, total):
            totals.append(total)
            self.n = 0

        def update(self, n=1, **_):
            self.n += n

        def close(self):
            totals.append(self.n)

    monkeypatch.setattr(study_module, "progress_bar", lambda total, enabled: Bar(total))
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=0)
    study.optimize(f, num_trials=6, progress=True)  # one generation and half the next
    study.optimize(f, num_generations=2, progress=True)  # the rest of that one (2) and one more (4)
    study.optimize(f, max_trials=15, progress=True)
    assert totals == [6, 6, 6, 6, 3, 3] and study.generation == 3 and len(study.trials) == 16


def test_one_objective_with_constraints_has_a_best_feasible_trial(tmp_path, monkeypatch):
    import jaxhpo.study.study as study_module

    shown = []  # the progress bar's "best" after each trial

    class Bar:
        def update(self, n=1, best=None, failed=0, pruned=0):
            shown.append(best)

        def close(self):
            pass

    monkeypatch.setattr(study_module, "progress_bar", lambda total, enabled: Bar())
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0))
    gp = jaxhpo.GPBO(space, 2, num_constraints=1, capacity=16, n_init=2, num_candidates=16, num_local=4,
                     restarts=1, acq_steps=2, fit_steps=2)
    study = Study(space, gp, seed=0, maximize=True)
    study.optimize(lambda p: (p["x"], p["x"] - 0.5), num_trials=4, progress=True)  # feasible when x <= 0.5
    study.optimize(lambda p: (p["x"], p["x"] - 0.5), num_trials=2, progress=True)  # starts from the best so far
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    feasible = [t for t in done if t.constraints[0] <= 0]
    assert feasible and len(feasible) < len(done)
    assert all(t.value == t.values[0] for t in done)
    best = max(feasible, key=lambda t: (t.value, -t.number))
    assert study.best_trial.number == best.number and study.best_value == best.value
    # the bar follows the best feasible value, never an infeasible one
    want = [max((t.value for t in feasible if t.number <= i), default=None) for i in range(6)]
    assert shown == want
    pytest.importorskip("matplotlib")
    from jaxhpo import plot

    assert [p.name for p in plot.save_plots(study, tmp_path)] == [
        "history.png", "parallel_coordinates.png", "slice.png", "importance.png"]


def test_a_conditional_space_json_cannot_hold_is_checked_and_old_files_still_open(tmp_path):
    import sqlite3

    path = str(tmp_path / "tuples.db")
    a = jaxhpo.Space(s=jaxhpo.Categorical([(1, 2), "flat"]), x=jaxhpo.Float(0, 1, when={"s": [(1, 2)]}))
    b = jaxhpo.Space(s=jaxhpo.Categorical([(1, 2), "flat"]), x=jaxhpo.Float(0, 1, when={"s": ["flat"]}))
    Study(a, jaxhpo.RandomSearch(a, 2), seed=0, storage=path, name="t").close()
    with pytest.raises(ValueError, match="was created with space"):
        Study(b, jaxhpo.RandomSearch(b, 2), seed=0, storage=path, name="t")
    # A file written when the stored repr left the conditions out still opens.
    from jaxhpo.study.specs import spec_json

    legacy = spec_json({"__unrepresentable__": "Space(s=Categorical([(1, 2), 'flat']), x=Float(0.0, 1.0, log=False))"})
    with sqlite3.connect(path) as c:
        c.execute("UPDATE studies SET space=?", (legacy,))
    # (only a file from before storage schema 6, which has no initial state: since
    # then the stored repr holds the conditions, and the old one would match any)
    with pytest.raises(ValueError, match="was created with space"):
        Study(a, jaxhpo.RandomSearch(a, 2), seed=0, storage=path, name="t")
    with sqlite3.connect(path) as c:
        c.execute("UPDATE studies SET initial_state=NULL")
    Study(a, jaxhpo.RandomSearch(a, 2), seed=0, storage=path, name="t").close()
    # An unconditional space's repr is the old one: a conditional version of it is refused.
    plain = jaxhpo.Space(s=jaxhpo.Categorical([(1, 2), "flat"]), x=jaxhpo.Float(0, 1))
    Study(plain, jaxhpo.RandomSearch(plain, 2), seed=0, storage=path, name="p").close()
    with pytest.raises(ValueError, match="was created with space"):
        Study(a, jaxhpo.RandomSearch(a, 2), seed=0, storage=path, name="p")


def test_trials_asked_by_another_study_object_of_this_process_are_named_then_released(tmp_path):
    path = str(tmp_path / "held.db")
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0))
    first = Study(space, jaxhpo.RandomSearch(space, 2), storage=path, name="h")
    first.ask()  # a notebook cell that failed before its tell
    second = Study(space, jaxhpo.RandomSearch(space, 2), storage=path, name="h")
    with pytest.raises(RuntimeError, match=r"asked from another Study object of 'h' in this process"):
        second.optimize(lambda p: p["x"], max_trials=4, progress=False)
    first.close()  # its untold trials go back to waiting
    second.optimize(lambda p: p["x"], max_trials=4, progress=False)
    assert [t.state for t in second.trials] == ["complete"] * 4
    second.close()


def test_two_study_objects_optimizing_in_threads_do_not_count_as_held():
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0))
    storage = jaxhpo.study.open_storage(None)
    slow_study, fast_study = (Study(space, jaxhpo.RandomSearch(space, 2), storage=storage, name="t")
                              for _ in range(2))
    started = threading.Event()

    def slow(p):
        started.set()
        time.sleep(0.3)  # the other object finds its generation waiting on this trial meanwhile
        return p["x"]

    errors = []

    def run(study, objective, n):
        try:
            study.optimize(objective, num_trials=n, progress=False)
        except Exception as e:  # noqa: BLE001 - reported to the test
            errors.append(e)

    t = threading.Thread(target=run, args=(slow_study, slow, 1))
    t.start()
    assert started.wait(10)
    run(fast_study, lambda p: p["x"], 3)
    t.join(30)
    assert not errors and [tr.state for tr in fast_study.trials] == ["complete"] * 4


def test_catch_takes_a_list():
    with Study(SPACE, jaxhpo.RandomSearch(SPACE, 2)) as s:
        s.optimize(lambda p: 1 / 0, num_trials=2, catch=[ZeroDivisionError], progress=False)
        assert [t.state for t in s.trials] == ["failed", "failed"]


def test_a_study_run_inside_an_objective_leaves_the_outer_trials_reports_working():
    """Nested tuning: the inner study's trials report to the inner study; the
    outer objective reports to its own trial before and after."""
    from jaxhpo.study import report

    inner_space = jaxhpo.Space(y=jaxhpo.Float(0.0, 1.0))

    def outer_objective(p):
        report(p["x"], 0)
        inner = Study(inner_space, jaxhpo.RandomSearch(inner_space, 2), seed=1)

        def inner_objective(q):
            report(q["y"], 0)
            return q["y"]

        inner.optimize(inner_objective, num_trials=2, progress=False)
        assert all(t.intermediate_values == {0: t.value} for t in inner.trials)
        report(p["x"] + 1.0, 1)
        return f(p)

    outer = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    outer.optimize(outer_objective, num_trials=2, progress=False)
    for t in outer.trials:
        assert t.state == TrialState.COMPLETE, t.error
        assert t.intermediate_values == {0: pytest.approx(t.params["x"]), 1: pytest.approx(t.params["x"] + 1.0)}
    with pytest.raises(TypeError, match="skip_if_exists must be True or False"):
        outer.enqueue_trial({"x": 0.5}, skip_if_exists="yes")
    from jaxhpo.study.importance import param_importance

    for bad in (0, 1, 1.5, True):
        with pytest.raises(ValueError, match="num_bins must be an integer >= 2"):
            param_importance(outer, num_bins=bad)


def _watch_write_transactions(study, monkeypatch, inside):
    """``inside[0]`` is True while ``study``'s storage runs a write transaction."""
    import contextlib

    real = study.storage.transaction

    @contextlib.contextmanager
    def watched(write=True):
        with real(write) as c:
            inside[0] = write
            try:
                yield c
            finally:
                inside[0] = False

    monkeypatch.setattr(study.storage, "transaction", watched)


def test_ask_and_tell_compile_before_any_write_transaction(monkeypatch):
    """A first compile inside a write transaction would hold the storage's write lock (from every
    other worker's reports and tells) for as long as it takes: the study compiles first."""
    import jax.monitoring

    space = jaxhpo.Space(u=jaxhpo.Float(0.0, 3.0), v=jaxhpo.Int(0, 7))  # a strategy no other test compiled
    study = Study(space, jaxhpo.RandomSearch(space, 5), seed=0)
    inside, compiled_inside = [False], []

    def listener(name, duration, **kwargs):
        if inside[0] and name == "/jax/core/compile/backend_compile_duration":
            compiled_inside.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    _watch_write_transactions(study, monkeypatch, inside)
    study.optimize(lambda p: (p["u"] - 1.0) ** 2 + p["v"], num_trials=15, progress=False)
    assert study.generation == 3 and not compiled_inside


def test_asks_run_outside_write_transactions(tmp_path, monkeypatch):
    """A slow strategy's ask (GP-BO's model fits: seconds) runs before the write transaction
    that stores or tells its generation, whichever Study object (process) proposed it, so it
    never holds the file's write lock; the search is the same as without it."""
    import jaxhpo.study.study as study_module

    monkeypatch.setattr(study_module, "_ASK_AHEAD_SECONDS", -1.0)  # every ask counts as slow
    space = jaxhpo.Space(u=jaxhpo.Float(0.0, 3.0))
    strategy = jaxhpo.TPE(space, popsize=2, capacity=16, n_startup=2)
    path = str(tmp_path / "s.db")
    a, b = Study(space, strategy, storage=path, seed=3), Study(space, strategy, storage=path, seed=3)
    inside, asked_inside = [False], []
    for study in (a, b):
        study._warm()
        real_propose = study._propose

        def propose(*args, real_propose=real_propose):
            asked_inside.append(inside[0])
            return real_propose(*args)

        _watch_write_transactions(study, monkeypatch, inside)
        monkeypatch.setattr(study, "_propose", propose)
    for _ in range(3):  # b proposes every generation, a tells it (its ask repeated from the stored state)
        for t in b.ask_trials():
            a.tell(t.number, (t.params["u"] - 1.0) ** 2)
    assert len(asked_inside) >= 6 and not any(asked_inside)
    alone = Study(space, strategy, seed=3)
    alone.optimize(lambda p: (p["u"] - 1.0) ** 2, num_trials=6, progress=False)
    assert [t.params for t in alone.trials] == [t.params for t in a.trials]


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt in the main thread, as in a terminal. A process started
    with SIGINT ignored (in the background of a non-interactive shell, under nohup) gets no
    KeyboardInterrupt from Python, and these tests would wait out their objectives instead."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_an_interrupted_parallel_optimize_lets_a_rerun_wait_for_its_running_trials(capsys, ctrl_c):
    """Ctrl-C while n_jobs workers run objectives: Python cannot stop those threads, so their
    trials finish and are recorded; running optimize again waits for them (no error about
    trials asked by hand) and goes on."""
    import signal

    started, release, count = [], threading.Event(), threading.Lock()

    def slow(p):
        with count:  # one Ctrl-C: both workers appending before either checks would send two
            started.append(p)
            second = len(started) == 2
        if second:  # both workers inside an objective: Ctrl-C, to the main thread
            # (a process-wide signal may reach a worker thread, leaving the main one asleep in join)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        release.wait(20)
        return f(p)

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(slow, num_trials=6, n_jobs=2, progress=False)
    assert [t.state for t in study.trials] == [TrialState.RUNNING] * 2
    assert "trial(s) [0, 1] finish in their worker threads" in capsys.readouterr().err
    threading.Timer(0.3, release.set).start()
    study.optimize(f, num_trials=2, progress=False)
    assert len(started) == 2 and [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert all(t.value == pytest.approx(f(t.params)) for t in study.trials)


def _interrupted_parallel_optimize(study, release):
    """``study.optimize(n_jobs=2)`` interrupted (as by Ctrl-C) while both workers are
    inside objectives that wait for ``release``; their trials' numbers."""
    import signal

    started, count = [], threading.Lock()

    def slow(p):
        with count:  # one Ctrl-C: both workers appending before either checks would send two
            started.append(p)
            second = len(started) == 2
        if second:  # both workers inside an objective: Ctrl-C, to the main thread
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        release.wait(20)
        return 1000.0 + f(p)

    with pytest.raises(KeyboardInterrupt):
        study.optimize(slow, num_trials=6, n_jobs=2, progress=False)
    return sorted(n for n, _ in study._in_flight)  # (claims: number, claim time)


def _wait_until(condition):
    deadline = time.monotonic() + 20
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_closing_an_interrupted_parallel_optimize_sends_its_running_trials_back(tmp_path, ctrl_c):
    """Closing the study (the command line does, then ends the process) or ending the process
    stops the worker threads: their trials go back to waiting, and a result they reach after
    that is not recorded, even once another run has claimed them again."""
    storage = jaxhpo.study.SQLiteStorage(str(tmp_path / "s.db"))
    release, later = threading.Event(), threading.Event()
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=storage)
    assert _interrupted_parallel_optimize(study, release) == [0, 1]
    study.close()
    other = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=storage)
    assert [t.state for t in other.trials] == [TrialState.WAITING] * 2

    def wait_then_f(p):
        later.wait(20)
        return f(p)

    rerun = threading.Thread(target=lambda: other.optimize(wait_then_f, num_trials=2, n_jobs=2, progress=False))
    rerun.start()
    _wait_until(lambda: [t.state for t in other.trials] == [TrialState.RUNNING] * 2)
    release.set()  # the old threads finish while the rerun holds their trials: refused
    _wait_until(lambda: not study._in_flight)
    later.set()
    rerun.join(20)
    assert [t.state for t in other.trials] == [TrialState.COMPLETE] * 2
    assert all(t.value == pytest.approx(f(t.params)) for t in other.trials)
    other.close()
    storage.close()


def test_a_new_study_object_waits_for_an_interrupted_optimizes_threads(tmp_path, ctrl_c):
    """A notebook cell that builds the study again, after Ctrl-C, while the old threads run:
    its optimize waits for their trials instead of taking them for trials asked by hand."""
    path = str(tmp_path / "s.db")
    release = threading.Event()
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=path)
    assert _interrupted_parallel_optimize(study, release) == [0, 1]
    again = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=path)
    threading.Timer(0.3, release.set).start()
    again.optimize(f, num_trials=2, progress=False)
    assert [t.state for t in again.trials] == [TrialState.COMPLETE] * 4
    assert [t.value for t in again.trials[:2]] == [1000.0 + f(t.params) for t in again.trials[:2]]
    again.close()
    study.close()


def test_an_interrupt_right_after_a_claim_sends_the_trial_back(tmp_path, monkeypatch):
    """Ctrl-C as a claim commits (one worker, in the main thread): the trial goes back to
    waiting, and optimize runs it on the next call."""
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=str(tmp_path / "s.db"))
    real_claim = study._claim

    def claim_then_interrupt(*args, **kwargs):
        real_claim(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "_claim", claim_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(f, num_trials=2, progress=False)
    assert [t.state for t in study.trials] == [TrialState.WAITING] * 2
    monkeypatch.setattr(study, "_claim", real_claim)
    study.optimize(f, num_trials=2, progress=False)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    study.close()


def test_an_interrupt_as_a_transaction_begins_leaves_no_transaction_open(tmp_path):
    storage = jaxhpo.study.SQLiteStorage(str(tmp_path / "s.db"))
    conn = storage._conn

    class InterruptedAfterBegin:
        in_transaction = property(lambda self: conn.in_transaction)

        def execute(self, sql, *args):
            out = conn.execute(sql, *args)
            if sql.startswith("BEGIN"):
                raise KeyboardInterrupt
            return out

    storage._conn = InterruptedAfterBegin()
    with pytest.raises(KeyboardInterrupt):
        with storage.transaction():
            pass
    assert not conn.in_transaction
    storage._conn = conn
    with storage.transaction() as c:  # usable, and the file's write lock is free
        c.execute("SELECT 1")
    storage.close()


def test_adding_a_whole_generation_asks_the_strategy_once_outside_the_write_lock(monkeypatch):
    # (its ask ran twice, both inside the write transaction: the proposal's,
    # then the tell's, which could not see the first before the commit)
    import jaxhpo.study.study as study_module

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    calls, run_ask = [], study_module.Study._run_ask

    def counted(self, generation, state):
        calls.append((generation, self._storage._conn.in_transaction))
        return run_ask(self, generation, state)

    monkeypatch.setattr(study_module.Study, "_run_ask", counted)
    monkeypatch.setitem(study_module._ASK_SECONDS, study.strategy, 10.0)  # a slow ask: asked ahead
    for p in ({"x": 0.1, "lr": 0.01, "n": 1, "kind": "a"}, {"x": 0.4, "lr": 0.1, "n": 2, "kind": "b"}):
        study.add_trial(p, 1.0)
    assert study.generation == 1 and calls == [(0, False)]
    study.close()


def test_user_attributes_are_stored_beside_results_and_dropped_with_an_interrupted_run(tmp_path):
    path = str(tmp_path / "attrs.db")

    def objective(p):
        jaxhpo.study.set_user_attr("accuracy", np.float32(0.5) + p["n"])  # a NumPy number
        jaxhpo.study.set_user_attr("curve", jnp.arange(3) * p["n"])        # a JAX array
        jaxhpo.study.set_user_attr("accuracy", 1.0 + p["n"])              # set again: replaced
        if p["n"] == 5:
            raise ValueError("diverged")                                   # kept on a failed trial
        return f(p)

    with Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=3, storage=path) as study, \
            pytest.warns(RuntimeWarning, match="diverged"):
        study.optimize(objective, num_trials=8, progress=False, n_jobs=2)
        assert any(t.params["n"] == 5 and t.state == TrialState.FAILED for t in study.trials)
    with Study.load(path) as study:  # stored: another process would read the same
        for t in study.trials:
            n = t.params["n"]
            assert t.user_attrs == {"accuracy": 1.0 + n, "curve": [0, n, 2 * n]}
            assert study.to_records()[t.number]["user_attrs_accuracy"] == 1.0 + n
        assert study.best_trial.user_attrs["accuracy"] == 1.0 + study.best_trial.params["n"]
        # ask/tell: set on a running trial only
        (trial,) = study.ask_trials(1)
        study.set_user_attr(trial, "note", {"path": "ckpt/0", "ok": True, "loss": None})
        study.tell(trial, 1.0)
        (told,) = study.get_trials(number=trial.number)
        assert told.user_attrs == {"note": {"path": "ckpt/0", "ok": True, "loss": None}}
        with pytest.raises(ValueError, match="only running trials take user attributes"):
            study.set_user_attr(trial, "late", 1)
        (trial,) = study.ask_trials(1)
        with pytest.raises(TypeError, match="key must be a non-empty str"):
            study.set_user_attr(trial, 3, 1)
        with pytest.raises(TypeError, match="'model': a value must be None, a bool, number or str"):
            study.set_user_attr(trial, "model", object())
        with pytest.raises(TypeError, match="a dict value needs str keys"):
            study.set_user_attr(trial, "by_step", {1: 0.5})
        loop = []
        loop.append(loop)
        for bad in (np.timedelta64(5, "s"), np.complex64(1), loop, b"raw", {1, 2}):
            with pytest.raises(TypeError, match="set_user_attr: 'bad': a value must"):
                study.set_user_attr(trial, "bad", bad)
        # floats of every width, bfloat16's and float8's included, as float64 numbers
        import ml_dtypes
        study.set_user_attr(trial, "widths", [jnp.ones(2, jnp.bfloat16), jnp.ones(1, jnp.float8_e4m3fn),
                                              ml_dtypes.bfloat16(2.5), np.array([1.5], np.longdouble)])
        study.tell(trial, 2.0)
        (told,) = study.get_trials(number=trial.number)
        assert told.user_attrs == {"widths": [[1.0, 1.0], [1.0], 2.5, [1.5]]}  # nothing of the refused

    def interrupted(p):
        jaxhpo.study.set_user_attr("seen", True)
        raise KeyboardInterrupt

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(interrupted, num_trials=1, progress=False)
    # the trial went back to waiting and will run again from the start: without the attribute
    assert [(t.state, t.user_attrs) for t in study.trials] == [(TrialState.WAITING, {})] * 2
    with pytest.raises(RuntimeError, match="set_user_attr\\(\\) works inside an objective run by Study.optimize"):
        jaxhpo.study.set_user_attr("outside", 1)


def test_optimize_starts_no_more_threads_than_trials_it_may_run():
    # n_jobs far above the budget: as many workers as trials (each was
    # started up front, 100000 of them for 4 trials).
    import threading

    seen = []

    def counted(p):
        seen.append(threading.active_count())
        return f(p)

    before = threading.active_count()
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    study.optimize(counted, num_trials=3, progress=False, n_jobs=100000)
    assert len(seen) == 3 and max(seen) <= before + 3 + 1  # (+1: the heartbeat)


def test_the_plain_progress_line_is_not_printed_twice_at_the_end(capsys):
    p = PlainProgress(4, interval=0.0)
    p.update(4, best=0.5)  # printed at once (interval 0)
    p.close()
    assert capsys.readouterr().err.count("trials 4/4") == 1
    p = PlainProgress(4, interval=1e9)
    p.update(4, best=0.5)  # not yet printed: close prints it
    p.close()
    assert capsys.readouterr().err.count("trials 4/4") == 1
