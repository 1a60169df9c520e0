"""Config files: every validation rule, units, overrides, params files, round trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from ltpnet import ModelSpec, Observe, Params, Protocol
from ltpnet.config import (
    Config,
    ConfigError,
    RunConfig,
    load_config,
    loads_config,
    parse_time,
    parse_value,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------- defaults, units

def test_empty_config_is_all_defaults():
    cfg = loads_config("")
    assert cfg.spec == ModelSpec()
    assert cfg.observe == Observe()
    assert cfg.protocol == Protocol()
    assert jax.tree_util.tree_leaves(cfg.params) == jax.tree_util.tree_leaves(Params())
    assert cfg.run.duration_ms == RunConfig().duration_ms
    assert cfg.run.checkpoint_every >= 1  # "auto" resolved to a number of chunks


@pytest.mark.parametrize("text, ms", [
    ("500 ms", 500.0), ("2 s", 2000.0), ("30 min", 1_800_000.0), ("8 h", 28_800_000.0),
    ("1.5e3 ms", 1500.0), (" 0.25 s ", 250.0), (20, 20.0), (0.1, 0.1),
])
def test_time_units(text, ms):
    assert parse_time(text) == ms


def test_time_strings_in_every_kind_of_table():
    cfg = loads_config("""
        [spec]
        dt = "0.1 ms"
        [neuron]
        tau_m = "0.02 s"
        [plasticity]
        tau_rho = "10 min"
        [pharmacology]
        apv_on = "1 min"
        apv_off = "2 min"
        [[protocol.tetanus]]
        pathway = "S1"
        at = "1 s"
        interval = "10 min"
        [run]
        duration_ms = "2 s"
        [record]
        every_ms = "50 ms"
    """)
    assert cfg.spec.dt == 0.1
    assert cfg.params.neuron.tau_m == 20.0
    assert cfg.params.plasticity.tau_rho == 600_000.0
    assert (cfg.params.pharmacology.apv_on, cfg.params.pharmacology.apv_off) == (
        60_000.0, 120_000.0)
    assert cfg.protocol_entries[0][1]["interval"] == 600_000.0
    assert cfg.protocol.pulses[0][1][0] == 1000.0
    assert cfg.run.duration_ms == 2000.0
    assert cfg.observe.every == 500


def test_pathways_keep_their_order_and_rate_table_fills_defaults():
    cfg = loads_config("""
        [spec]
        pathways = { bg = 50, S2 = 20, S1 = 30 }
        k = 40
        [input]
        rate = { S1 = 4.0, bg = 0.5 }
    """)
    assert cfg.spec.pathways == (("bg", 50), ("S2", 20), ("S1", 30))
    default = Params().input.rate
    np.testing.assert_array_equal(cfg.params.input.rate, [0.5, default, 4.0])


def test_protocol_tables_map_to_builder_calls():
    cfg = loads_config("""
        [[protocol.test_pulses]]
        pathway = "S2"
        start = 0
        stop = "1 s"
        every = "250 ms"
        [[protocol.train]]
        pathway = "S1"
        at = 100
        freq = 50
        n = 3
        [[protocol.pairing]]
        pathway = "S1"
        at = 2000
        freq = 1
        n = 2
        dt_ms = -10
        [[protocol.post]]
        times = [5, "1 s"]
    """)
    want = (Protocol().test_pulses("S2", 0, 1000, 250).train("S1", 100, 50, 3)
            .pairing("S1", 2000, 1, 2, -10).add_post([5, 1000]))
    assert cfg.protocol == want


# --------------------------------------------------------------------- validation

def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"unknown key 'tau_mm' in \[neuron\]; "
                                          r"did you mean 'tau_m'\?"):
        loads_config("[neuron]\ntau_mm = 10\n")


def test_unknown_key_without_near_match_lists_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'zzz' in \[run\]; allowed "
                                          r"keys: duration_ms, seed"):
        loads_config("[run]\nzzz = 1\n")


def test_unknown_table_suggests_nearest():
    with pytest.raises(ConfigError, match=r"unknown table \[nueron\]; did you mean "
                                          r"\[neuron\]\?"):
        loads_config("[nueron]\ntau_m = 10\n")


def test_top_level_key_outside_a_table():
    with pytest.raises(ConfigError, match=r"unknown table \[seed\]; every key belongs"):
        loads_config("seed = 3\n")


def test_bool_where_number_expected():
    with pytest.raises(ConfigError, match=r"\[neuron\] E_L must be a number, "
                                          r"got E_L=True \(a boolean\)"):
        loads_config("[neuron]\nE_L = true\n")


def test_string_where_number_expected():
    with pytest.raises(ConfigError, match=r"\[spec\] n_post must be an integer, "
                                          r"got n_post='many' \(a string\)"):
        loads_config('[spec]\nn_post = "many"\n')


def test_float_where_integer_expected():
    with pytest.raises(ConfigError, match=r"\[spec\] k must be an integer, got k=10.5"):
        loads_config("[spec]\nk = 10.5\n")


def test_bool_where_time_expected():
    with pytest.raises(ConfigError, match=r"\[neuron\] tau_m must be a number in ms, "
                                          r"or a string with a unit"):
        loads_config("[neuron]\ntau_m = false\n")


@pytest.mark.parametrize("table", ['ttx_on = "5 s"',
                                   'apv_on = "5 s"\napv_off = "1 s"',
                                   'clamp_on = 1000\nclamp_off = 1000'])
def test_drug_window_that_never_opens(table):
    # only the start given (the end defaults to 0), an end before it, or equal ends
    with pytest.raises(ConfigError, match=r"\[pharmacology\] (ttx|apv|clamp)_off must "
                                          r"be later than \1_on \(the drug acts from "
                                          r"\1_on to \1_off, in ms\), got \1_on="):
        loads_config(f"[pharmacology]\n{table}\n")
    # an open window, no window at all, and the explicit [0, 0) of a dumped config load
    assert loads_config('[pharmacology]\nttx_on = "5 s"\nttx_off = "6 s"\n')
    assert loads_config("[pharmacology]\napv = 0.5\n").params.pharmacology.apv_off == 0
    assert loads_config("[pharmacology]\nttx_on = 0\nttx_off = 0\n")


@pytest.mark.parametrize("value", ["-5", "0", '"-2 s"'])
def test_non_positive_time_constant(value):
    with pytest.raises(ConfigError, match=r"\[neuron\] tau_m is a time constant and "
                                          r"must be > 0 ms, got tau_m="):
        loads_config(f"[neuron]\ntau_m = {value}\n")


def test_theta_p_must_exceed_theta_d():
    with pytest.raises(ConfigError, match=r"\[plasticity\] theta_p must exceed "
                                          r"theta_d, got theta_p=0.9, theta_d=1.0"):
        loads_config("[plasticity]\ntheta_p = 0.9\ntheta_d = 1.0\n")


def test_release_depression_keys_are_checked():
    with pytest.raises(ConfigError, match=r"\[input\] u_rel must be 0 unless "
                       r"spec.depression is true .*got u_rel=0.2"):
        loads_config("[input]\nu_rel = 0.2\n")
    with pytest.raises(ConfigError, match=r"\[input\] u_rel is the share of the "
                       r"releasable pool a spike uses and must lie in \[0, 1\), "
                       r"got u_rel=1.5"):
        loads_config("[spec]\ndepression = true\n[input]\nu_rel = 1.5\n")
    with pytest.raises(ConfigError, match=r"\[spec\] depression must be False unless "
                       r"calcium is 'nmda'"):
        loads_config('[spec]\ndepression = true\ncalcium = "linear"\n')
    cfg = loads_config("[spec]\ndepression = true\n[input]\nu_rel = 0.2\n"
                       'tau_rec = "2 s"\n')
    assert cfg.spec.depression and cfg.params.input.tau_rec == 2000.0


def test_release_parameters_per_pathway():
    """u_rel and tau_rec take a table per pathway, as rate does (an uncaged input
    releases nothing); pathways left out get the default; a config written back
    keeps the table."""
    head = "[spec]\ndepression = true\n[input]\n"
    cfg = loads_config(head + 'u_rel = { S1 = 0.2 }\n'
                       'tau_rec = { S1 = "2 s", bg = 300 }\n')
    names = cfg.spec.pathway_names
    u = dict(zip(names, np.asarray(cfg.params.input.u_rel).tolist(), strict=True))
    tau = dict(zip(names, np.asarray(cfg.params.input.tau_rec).tolist(), strict=True))
    assert u == {n: 0.2 if n == "S1" else 0.0 for n in names}
    assert tau == {n: 2000.0 if n == "S1" else 300.0 if n == "bg" else 500.0
                   for n in names}
    back = loads_config(cfg.to_toml()).params.input
    assert back.u_rel.tolist() == list(u.values()) and back.tau_rec.tolist() == list(
        tau.values())
    for bad, message in [
        ("u_rel = { S9 = 0.2 }", r"\[input\] u_rel has no pathway 'S9'"),
        ("u_rel = { S1 = 1.2 }", r"\[input\] u_rel is the share .* got u_rel=\[1.2"),
        ('tau_rec = { S1 = "2 parsecs" }',
         r"\[input\] tau_rec: unknown unit 'parsecs'"),
        ("u_rel = [0.1]", r"\[input\] u_rel must be a number or an inline table of "
                          r"pathway = value .* got an array of 1 values"),
    ]:
        with pytest.raises(ConfigError, match=message):
            loads_config(head + bad + "\n")


def test_spec_rules_are_prefixed_with_the_table():
    with pytest.raises(ConfigError, match=r"^\[spec\] k must be at most n_pre=1000"):
        loads_config("[spec]\nk = 5000\n")
    with pytest.raises(ConfigError, match=r"^\[spec\] calcium must be one of "
                                          r"\['nmda', 'linear'\], got calcium='nmdaa'"):
        loads_config('[spec]\ncalcium = "nmdaa"\n')


def test_bad_pathways_table():
    with pytest.raises(ConfigError, match=r"\[spec\] pathways: S1 must be a positive "
                                          r"number of inputs, got S1=0"):
        loads_config("[spec]\npathways = { S1 = 0, bg = 900 }\n")


def test_unknown_pathway_in_protocol():
    with pytest.raises(ConfigError, match=r"\[\[protocol.tetanus\]\] #2: unknown "
                                          r"pathway 'S3'; the pathways are "
                                          r"\['S1', 'S2', 'bg'\]"):
        loads_config("""
            [[protocol.tetanus]]
            pathway = "S1"
            at = 0
            [[protocol.tetanus]]
            pathway = "S3"
            at = 1000
        """)


def test_missing_protocol_key():
    with pytest.raises(ConfigError, match=r"\[\[protocol.train\]\] #1 lacks freq, n"):
        loads_config('[[protocol.train]]\npathway = "S1"\nat = 0\n')


def test_unknown_protocol_kind_and_key():
    with pytest.raises(ConfigError, match=r"unknown key 'tetanos' in \[protocol\]; "
                                          r"did you mean 'tetanus'\?"):
        loads_config('[[protocol.tetanos]]\npathway = "S1"\nat = 0\n')
    with pytest.raises(ConfigError, match=r"unknown key 'freqq' in "
                                          r"\[\[protocol.tetanus\]\] #1; did you mean "
                                          r"'freq'\?"):
        loads_config('[[protocol.tetanus]]\npathway = "S1"\nat = 0\nfreqq = 5\n')


def test_bad_protocol_values():
    with pytest.raises(ConfigError, match=r"#1: every must be > 0 ms, got every=0.0"):
        loads_config('[[protocol.test_pulses]]\npathway = "S1"\nstart = 0\n'
                     'stop = 100\nevery = 0\n')
    with pytest.raises(ConfigError, match=r"#1: stop must exceed start"):
        loads_config('[[protocol.test_pulses]]\npathway = "S1"\nstart = 100\n'
                     'stop = 100\nevery = 10\n')


def test_unknown_pathway_in_rate_table():
    with pytest.raises(ConfigError, match=r"\[input\] rate has no pathway 'S11'; "
                                          r"did you mean 'S1'\?"):
        loads_config("[input]\nrate = { S11 = 2.0 }\n")


def test_unknown_record_variable():
    with pytest.raises(ConfigError, match=r"^\[record\] unknown record variable "
                                          r"'voltage'; choose from"):
        loads_config('[record]\nvariables = ["fepsp", "voltage"]\n')


def test_every_and_every_ms_together():
    with pytest.raises(ConfigError, match=r"\[record\] give every \(steps\) or "
                                          r"every_ms, not both"):
        loads_config("[record]\nevery = 10\nevery_ms = 1\n")


def test_every_ms_must_be_whole_steps():
    with pytest.raises(ConfigError, match=r"every_ms must be a positive multiple of "
                                          r"dt=0.1 ms, got every_ms=0.25"):
        loads_config("[record]\nevery_ms = 0.25\n")


@pytest.mark.parametrize("value, msg", [
    ('"20 parsec"', r"\[neuron\] tau_m: unknown unit 'parsec' in '20 parsec'; use a "
                    r"number in ms"),
    ('"fast"', r"\[neuron\] tau_m: cannot read it as a time in 'fast'"),
    ('"20"', r"\[neuron\] tau_m: cannot read it as a time in '20'"),
])
def test_bad_unit_string(value, msg):
    with pytest.raises(ConfigError, match=msg):
        loads_config(f"[neuron]\ntau_m = {value}\n")


def test_run_rules():
    with pytest.raises(ConfigError, match=r"\[run\] duration_ms must be a time > 0"):
        loads_config("[run]\nduration_ms = 0\n")
    with pytest.raises(ConfigError, match=r"\[run\] seed must be in \[0, 2\*\*32\)"):
        loads_config("[run]\nseed = -1\n")
    with pytest.raises(ConfigError,
                       match=r'checkpoint_every must be an integer or "auto"'):
        loads_config('[run]\ncheckpoint_every = "often"\n')


def test_invalid_toml_names_the_file(tmp_path):
    p = write(tmp_path, "[neuron\ntau_m = 1\n")
    with pytest.raises(ConfigError, match=r"c.toml: invalid TOML"):
        load_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: '.*nope.toml'"):
        load_config(tmp_path / "nope.toml")


def test_missing_params_file(tmp_path):
    p = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"params file not found: '.*fit.json'"):
        load_config(p, params_file=tmp_path / "fit.json")


def test_config_cannot_run_code():
    # a config is data: an expression is neither evaluated nor accepted
    with pytest.raises(ConfigError,
                       match=r"\[neuron\] tau_m: cannot read it as a time"):
        loads_config('[neuron]\ntau_m = "__import__(\'os\').getcwd()"\n')


# --------------------------------------------------------------------- overrides

def test_overrides_apply_before_validation(tmp_path):
    p = write(tmp_path, "[neuron]\ntau_m = 10\n")
    cfg = load_config(p, ["neuron.tau_m=30", "spec.calcium=linear",
                          "run.duration_ms=2 s", "input.rate={S1 = 3}",
                          "record.variables=[\"r\"]"])
    assert cfg.params.neuron.tau_m == 30.0
    assert cfg.spec.calcium == "linear"  # bare word read as a string
    assert cfg.run.duration_ms == 2000.0
    assert cfg.params.input.rate[0] == 3.0
    assert cfg.observe.variables == ("r",)


def test_override_into_protocol_entry():
    cfg = loads_config('[[protocol.tetanus]]\npathway = "S1"\nat = 0\n',
                       ['protocol.tetanus[0].at="2 s"', "protocol.tetanus[0].n=5"])
    assert cfg.protocol == Protocol().tetanus("S1", at=2000.0, n=5)
    with pytest.raises(ConfigError, match=r"tetanus has 1 entries, so index 3 does "
                                          r"not exist"):
        loads_config('[[protocol.tetanus]]\npathway = "S1"\nat = 0\n',
                     ["protocol.tetanus[3].at=1"])


def test_overrides_are_validated_and_named():
    with pytest.raises(ConfigError, match=r"unknown key 'tau_mm' in \[neuron\]; did "
                                          r"you mean 'tau_m'\? "
                                          r"\(from --set neuron.tau_mm=3\)"):
        loads_config("", ["neuron.tau_mm=3"])
    with pytest.raises(ConfigError, match=r"theta_p must exceed theta_d.*\(from --set "
                                          r"plasticity.theta_p=0.5\)"):
        loads_config("", ["plasticity.theta_p=0.5"])


@pytest.mark.parametrize("text", ["neuron.tau_m", "tau_m=3", "neuron..tau_m=3",
                                  "=3", "neuron.tau m=3"])
def test_bad_set_syntax(text):
    with pytest.raises(ConfigError, match=r"bad --set .*expected table.key=value"):
        loads_config("", [text])


def test_bad_set_value():
    with pytest.raises(ConfigError, match=r"bad --set 'neuron.tau_m=\[1,': cannot read "
                                          r"'\[1,' as a TOML value"):
        loads_config("", ["neuron.tau_m=[1,"])


def test_parse_value():
    assert parse_value("1.5") == 1.5
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("true") is True
    assert parse_value('"x y"') == "x y"
    assert parse_value("linear") == "linear"
    assert parse_value("{S1 = 2}") == {"S1": 2}


# --------------------------------------------------------------------- params file

def test_params_file_replaces_the_defaults_and_set_wins(tmp_path):
    """A fit result sets what the config leaves to the defaults; the config's own
    values hold (and are named), and --set overrides both."""
    p = write(tmp_path, "[plasticity]\ntheta_p = 1.3\n")
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"params": {"plasticity.theta_p": 1.7,
                                          "calcium.tau_Ca": 25.0}, "loss": 0.1}))
    cfg = load_config(p, params_file=fit)
    assert cfg.params.plasticity.theta_p == 1.3
    assert cfg.params.calcium.tau_Ca == 25.0
    assert cfg.kept_over_params == ("plasticity.theta_p",)
    assert load_config(p).kept_over_params == ()
    cfg = load_config(p, ["plasticity.theta_p=1.9", "calcium.tau_Ca=30"],
                      params_file=fit)
    assert cfg.params.plasticity.theta_p == 1.9 and cfg.params.calcium.tau_Ca == 30.0
    assert load_config(write(tmp_path, "", "empty.toml"),
                       params_file=fit).params.plasticity.theta_p == 1.7


def test_params_file_errors(tmp_path):
    p = write(tmp_path, "")
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"params": {"spec.n_post": 5}}))
    with pytest.raises(ConfigError, match=r"'spec.n_post' is not a parameter"):
        load_config(p, params_file=fit)
    fit.write_text(json.dumps({"params": {"plasticity.theta_pp": 1.5}}))
    with pytest.raises(ConfigError, match=r"unknown key 'theta_pp' in \[plasticity\]; "
                                          r"did you mean 'theta_p'\? "
                                          r"\(from params file"):
        load_config(p, params_file=fit)
    fit.write_text(json.dumps({"params": {"input.u_rel": 0.01}}))  # a depression fit
    with pytest.raises(ConfigError, match=r"\[spec\] depression = true turns "
                       r"short-term depression on\), got u_rel=0.01 "
                       r"\(from params file"):
        load_config(p, params_file=fit)
    fit.write_text(json.dumps({"plasticity.theta_p": 1.5}))
    with pytest.raises(ConfigError, match=r"must hold an object"):
        load_config(p, params_file=fit)
    fit.write_text("{not json")
    with pytest.raises(ConfigError, match=r"is not valid JSON"):
        load_config(p, params_file=fit)


# --------------------------------------------------------------------- round trip

FULL = """
[spec]
n_post = 12
k = 30
pathways = { "S-1" = 20, S2 = 20, bg = 60 }
dt = 0.05
calcium = "linear"
ca_delay_steps = 3
phases = false
slow_every = 2
rho_init = "uniform"
[neuron]
tau_m = "15 ms"
[input]
rate = { bg = 0.3 }
[plasticity]
theta_p = 1.41
w_max = 0.123456789
[pharmacology]
apv_on = "1 s"
apv_off = "3 s"
[[protocol.tetanus]]
pathway = "S-1"
at = "2 s"
trains = 2
interval = "1 s"
[[protocol.test_pulses]]
pathway = "S2"
start = 0
stop = "5 s"
every = "700 ms"
[[protocol.post]]
times = [1.5, 2.5]
[run]
duration_ms = "6 s"
seed = 7
records_per_chunk = 3
checkpoint_every = 2
[record]
every = 200
variables = ["fepsp", "rho", "v"]
neurons = 4
spike_neurons = 5
input_neurons = 6
[output]
dir = "some/where"
plots = false
"""


def test_resolved_config_round_trip(tmp_path):
    cfg = loads_config(FULL)
    text = cfg.to_toml()
    again = load_config(write(tmp_path, text, "resolved.toml"))
    assert again == cfg
    assert again.to_toml() == text
    assert again.spec == cfg.spec
    assert again.observe == cfg.observe
    assert again.protocol == cfg.protocol
    assert again.run == cfg.run and again.output == cfg.output
    for a, b in zip(jax.tree_util.tree_leaves(again.params),
                    jax.tree_util.tree_leaves(cfg.params), strict=True):
        np.testing.assert_array_equal(a, b)
    # every key is written, defaults included
    for f in dataclasses.fields(ModelSpec):
        assert f"\n{f.name} = " in text
    for f in dataclasses.fields(Params().consolidation):
        assert f"\n{f.name} = " in text
    assert "neurons = 4" in text and "checkpoint_every = 2" in text


def test_config_equality_sees_differences():
    a = loads_config(FULL)
    b = loads_config(FULL, ["plasticity.theta_p=1.42"])
    assert a != b
    assert isinstance(a, Config)


# --------------------------------------------------------------------- shipped configs

def test_default_config_loads():
    cfg = load_config(CONFIGS / "default.toml")
    assert cfg.spec.pathway_names == ("S1", "S2", "bg")
    assert cfg.spec.homeostasis
    names = {name for name, _ in cfg.protocol.pulses}
    assert names == {"S1", "S2"}
    assert 5 * 60_000 <= cfg.run.duration_ms <= 10 * 60_000
    assert {"fepsp", "r", "a", "w_mean"} <= set(cfg.observe.variables)
    assert cfg.observe.spike_neurons > 0


def test_bench_v1_config_is_bench_v1():
    cfg = load_config(CONFIGS / "bench_v1.toml")
    s = cfg.spec
    assert (s.n_pre, s.n_post, s.k, s.n_pathways) == (1000, 1000, 100, 1)
    assert (s.rho_init, s.phases, s.slow_every, s.dt, s.dtype) == (
        "uniform", False, 1, 0.1, "float32")
    assert cfg.run.duration_ms == 1000.0
    want = Params.bench_v1(k=100)
    assert (jax.tree_util.tree_structure(cfg.params)
            == jax.tree_util.tree_structure(want))
    assert jax.tree_util.tree_leaves(cfg.params) == jax.tree_util.tree_leaves(want)
