"""The Gymnasium environment (sim/gym_env.py): API contract, seeding, actions that bite, any scenario."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from sim.gym_env import EVGridEnv, make_vec

SMALL = ["fleet.n_evs=60", "time.horizon_h=8", "time.start_h=14"]


@pytest.fixture(scope="module")
def env() -> EVGridEnv:
    return EVGridEnv("default", SMALL)


def _episode(env: EVGridEnv, policy, seed: int) -> tuple[list[np.ndarray], list[float], list[dict]]:
    obs, _ = env.reset(seed=seed)
    seen, rewards, infos = [obs], [], []
    done = False
    while not done:
        obs, r, done, trunc, info = env.step(policy(obs))
        assert not trunc
        seen.append(obs)
        rewards.append(r)
        infos.append(info)
    return seen, rewards, infos


def test_passes_gymnasiums_env_checker(env: EVGridEnv) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Box bound is infinite" advice, and no render modes
        check_env(env, skip_render_check=True)


def test_same_seed_same_episode_other_seed_other_day(env: EVGridEnv) -> None:
    ones = lambda obs: np.ones(env.n_stations)  # noqa: E731
    a = _episode(env, ones, 7)
    b = _episode(env, ones, 7)
    c = _episode(env, ones, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0], strict=True)) and a[1] == b[1]
    assert a[1] != c[1]


def test_actions_decide_the_charging_and_the_reward_counts_it(env: EVGridEnv) -> None:
    """Nothing charges at share 0 (all the need left unserved), everything at share 1; the cost term is the
    energy cost the run's own step table records."""
    _, r0, i0 = _episode(env, lambda obs: np.zeros(env.n_stations), 3)
    res0 = env.result()
    assert sum(i["cost_usd"] for i in i0) == 0.0 and res0.kpis["ev_energy_kwh"] == 0.0
    _, r1, i1 = _episode(env, lambda obs: np.ones(env.n_stations), 3)
    res1 = env.result()
    assert res1.kpis["ev_energy_kwh"] > 0
    steps = res1.tables["steps"]
    dt_h = 0.25
    expected = float((steps["ev_load_kw"] * steps["price_usd_per_mwh"]).sum() * dt_h / 1000.0)
    assert sum(i["cost_usd"] for i in i1) == pytest.approx(expected, rel=1e-9)
    # EVs that leave during the episode leave more unmet energy when nothing charges
    assert sum(i["unserved_kwh"] for i in i0) > sum(i["unserved_kwh"] for i in i1)
    # half the share delivers less than full share in the first step with plugged EVs
    half = lambda obs: np.full(env.n_stations, 0.5)  # noqa: E731
    _, _, ih = _episode(env, half, 3)
    assert 0 < sum(i["cost_usd"] for i in ih) < sum(i["cost_usd"] for i in i1) + 1e-9


def test_bad_actions_are_value_errors_and_clipping_is_reported(env: EVGridEnv) -> None:
    env.reset(seed=1)
    with pytest.raises(ValueError, match=rf"action: expected shape \({env.n_stations},\)"):
        env.step(np.ones(env.n_stations + 1))
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.full(env.n_stations, np.nan))
    _, _, _, _, info = env.step(np.full(env.n_stations, 2.0))
    assert info["clipped_actions"] == env.n_stations
    with pytest.raises(ValueError, match="reward_weights.cost"):
        EVGridEnv("default", SMALL, reward_weights={"cost": -1.0})
    with pytest.raises(ValueError, match="unknown term 'price'"):
        EVGridEnv("default", SMALL, reward_weights={"price": 1.0})


def test_any_scenario_attacks_included_and_other_grids() -> None:
    attack = "attacks=[{kind='soc-falsification', share=0.5, magnitude=-0.5, start_h=0, end_h=8}]"
    env = EVGridEnv("default", [*SMALL, attack, "detection.state_estimation=true"])
    _, rewards, _ = _episode(env, lambda obs: np.ones(env.n_stations), 2)
    assert env.result().tables["steps"]["attacked"].any()
    assert all(np.isfinite(rewards))
    other = EVGridEnv("default", [*SMALL, "grid.case='pandapower:create_cigre_network_mv'"])
    assert other.observation_space.shape == (3 + 5 * other.n_stations,)
    _, rewards, infos = _episode(other, lambda obs: np.ones(other.n_stations), 2)
    assert all(i["pf_converged"] for i in infos) and all(np.isfinite(rewards))


def test_registered_and_vectorised() -> None:
    env = gym.make("evgrid/EVGrid-v0", overrides=SMALL)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()
    vec = make_vec(2, "default", SMALL)
    obs, _ = vec.reset(seed=0)  # copies get seeds 0 and 1
    n_obs, n_act = EVGridEnv("default", SMALL).observation_space.shape, EVGridEnv("default", SMALL).n_stations
    assert obs.shape == (2, *(n_obs or ()))
    obs, rew, term, trunc, _ = vec.step(np.ones((2, n_act)))
    assert rew.shape == (2,) and np.all(np.isfinite(rew))
    vec.close()
