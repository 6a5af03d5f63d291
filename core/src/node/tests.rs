//! `Node::new`'s checks of a configuration: each bad value is a `ConfigError` naming it.

use std::time::Duration;

use super::{ConfigError, Node};
use crate::config::{Config, IAMALIVE_PERIOD_MAX, Upstream};
use crate::filter::NoFilterEngine;

fn new_node(config: Config) -> Result<Node, ConfigError> {
    Node::new(
        config,
        Box::new(NoFilterEngine),
        7,
        crate::testutil::origin(),
        Duration::from_secs(1_700_000_000),
    )
}

fn broker() -> Config {
    Config::new(Some("ivo://example.org/broker".into()))
}

#[test]
fn an_iamalive_period_of_zero_or_over_90_s_is_refused_with_the_bound_in_the_message() {
    for bad in [
        Duration::ZERO,
        IAMALIVE_PERIOD_MAX + Duration::from_millis(1),
        Duration::from_secs(3600),
    ] {
        let mut c = broker();
        c.timing.iamalive_period = bad;
        let err = new_node(c).expect_err("refused");
        assert_eq!(err, ConfigError::IamalivePeriod { given: bad });
        let text = err.to_string();
        assert!(text.contains("at most 90s"), "{text}");
    }
}

#[test]
fn iamalive_periods_from_just_above_zero_to_exactly_90_s_are_accepted() {
    for good in [
        Duration::from_millis(1),
        Duration::from_secs(60),
        IAMALIVE_PERIOD_MAX,
    ] {
        let mut c = broker();
        c.timing.iamalive_period = good;
        assert!(new_node(c).is_ok(), "{good:?}");
    }
}

#[test]
fn an_upstream_without_endpoints_and_an_invalid_local_ivo_are_refused() {
    let mut c = broker();
    c.upstreams.push(Upstream {
        endpoints: Vec::new(),
    });
    assert_eq!(
        new_node(c).expect_err("refused"),
        ConfigError::EmptyUpstream(0)
    );
    let err = new_node(Config::new(Some("not an ivoid".into()))).expect_err("refused");
    assert!(matches!(err, ConfigError::LocalIvo { .. }), "{err:?}");
}
