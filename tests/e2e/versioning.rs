//! Versioned orchestrations: two versions registered under one name; starts
//! with and without an explicit version run the expected one, and a running
//! instance upgrades from 1.0.0 to 2.0.0 through continue-as-new.

use duroxide::{Event, EventKind, OrchestrationContext, OrchestrationRegistry};

use crate::support::{Env, assert_well_formed, no_activities};

fn started_version(hist: &[Event]) -> String {
    match &hist[0].kind {
        EventKind::OrchestrationStarted { version, .. } => version.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn versioned_orchestrations_run_the_requested_version() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Pricing",
            |ctx: OrchestrationContext, amount: String| async move {
                Ok(format!(
                    "v1 price {amount} ({})",
                    ctx.orchestration_version()
                ))
            },
        )
        .register_versioned(
            "Pricing",
            "2.0.0",
            |ctx: OrchestrationContext, amount: String| async move {
                Ok(format!(
                    "v2 price {amount}+tax ({})",
                    ctx.orchestration_version()
                ))
            },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    env.client
        .start_orchestration("latest", "Pricing", "10")
        .await
        .unwrap();
    env.client
        .start_orchestration_versioned("pinned-v1", "Pricing", "1.0.0", "20")
        .await
        .unwrap();
    env.client
        .start_orchestration_versioned("pinned-v2", "Pricing", "2.0.0", "30")
        .await
        .unwrap();

    for (instance, output, version) in [
        ("latest", "v2 price 10+tax (2.0.0)", "2.0.0"),
        ("pinned-v1", "v1 price 20 (1.0.0)", "1.0.0"),
        ("pinned-v2", "v2 price 30+tax (2.0.0)", "2.0.0"),
    ] {
        assert_eq!(env.wait_completed(instance).await, output);
        let hist = env.history(instance).await;
        assert_well_formed(&hist, instance, 1);
        assert_eq!(started_version(&hist), version, "{instance}");
        let info = env.client.get_instance_info(instance).await.unwrap();
        assert_eq!(info.orchestration_version, version, "{instance}");
    }

    env.finish([rt]).await;
}

#[tokio::test]
async fn continue_as_new_upgrades_a_running_instance() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Eternal",
            |ctx: OrchestrationContext, state: String| async move {
                ctx.continue_as_new_versioned("2.0.0", format!("{state}+v1"))
                    .await
            },
        )
        .register_versioned(
            "Eternal",
            "2.0.0",
            |_ctx: OrchestrationContext, state: String| async move { Ok(format!("{state}+v2")) },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    env.client
        .start_orchestration_versioned("eternal", "Eternal", "1.0.0", "s")
        .await
        .unwrap();
    assert_eq!(env.wait_completed("eternal").await, "s+v1+v2");

    assert_eq!(env.client.list_executions("eternal").await.unwrap(), [1, 2]);
    let first = env.execution_history("eternal", 1).await;
    let second = env.execution_history("eternal", 2).await;
    assert_well_formed(&first, "eternal", 1);
    assert_well_formed(&second, "eternal", 2);
    assert_eq!(started_version(&first), "1.0.0");
    assert_eq!(started_version(&second), "2.0.0");
    let info = env.client.get_instance_info("eternal").await.unwrap();
    assert_eq!(info.orchestration_version, "2.0.0");

    env.finish([rt]).await;
}
