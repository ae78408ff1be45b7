"""What serving says of config values the registered model does not take from the serve-time
config: an environment override is refused; a config-file edit is reported as not applied;
a setting the policy protocol froze at registration is reported as frozen, not as drift."""

from __future__ import annotations

import pytest

from configs.schema import Config
from serving.serve import ServeConfigError, config_not_applied, frozen_settings, model_features

FROZEN = {"policy.confidence": 0.99, "policy.stress_floor_weight": 1.0}


def _bundled() -> dict:
    """The config the model was registered with: the protocol's choice applied."""
    return Config().with_overrides(FROZEN).resolved()


def test_a_frozen_setting_is_not_drift_and_an_edited_one_is():
    edited = Config().with_overrides({"policy.fhs_window": 400})  # file edited since
    drift = config_not_applied(edited, _bundled(), environ={}, frozen=FROZEN)
    assert drift == {"policy.fhs_window": {"serve": 400, "model": 500}}
    # without the record (a model registered before it) the frozen values read as drift
    legacy = config_not_applied(edited, _bundled(), environ={})
    assert set(legacy) == {"policy.fhs_window", *FROZEN}
    assert frozen_settings(edited, FROZEN) == {
        "policy.confidence": {"config": 0.975, "model": 0.99},
        "policy.stress_floor_weight": {"config": 0.5, "model": 1.0}}
    assert frozen_settings(Config().with_overrides(FROZEN), FROZEN) == {}


def test_an_environment_override_of_a_frozen_setting_is_still_refused():
    with pytest.raises(ServeConfigError, match=r"policy\.confidence = 0\.98 \(model: 0\.99\)"):
        config_not_applied(Config().with_overrides({"policy.confidence": 0.98}), _bundled(),
                           environ={"VOLMARGIN__POLICY__CONFIDENCE": "0.98"}, frozen=FROZEN)


def test_the_panel_is_built_with_the_models_feature_settings_but_the_operators_retention():
    edited = Config().with_overrides({"features.liquidation_delay_hours": 24,
                                      "features.outage_bridge_hours": 6,
                                      "features.store_keep_latest": 9})
    bundle = {"config": _bundled()}
    used = model_features(edited, bundle)
    assert (used.liquidation_delay_hours, used.outage_bridge_hours) == (1, 24)
    assert used.store_keep_latest == 9
    drift = config_not_applied(edited, bundle["config"], environ={}, frozen=FROZEN)
    assert drift == {"features.liquidation_delay_hours": {"serve": 24, "model": 1},
                     "features.outage_bridge_hours": {"serve": 6, "model": 24}}
    # a bundle from before a feature setting existed: the serve-time value stands in
    legacy = {"config": {**_bundled(), "features": {
        k: v for k, v in _bundled()["features"].items() if k != "outage_bridge_hours"}}}
    assert model_features(edited, legacy).outage_bridge_hours == 6
    with pytest.raises(ServeConfigError, match=r"features\.liquidation_delay_hours = 24"):
        config_not_applied(edited, bundle["config"], frozen=FROZEN,
                           environ={"VOLMARGIN__FEATURES__LIQUIDATION_DELAY_HOURS": "24"})
