//! Sub-orchestrations: a chain nested three levels below the root, with the
//! hierarchy visible through the management API (children, parents, tree,
//! instance info); a failing child surfacing to its parent as an application
//! error; and a detached (fire-and-forget) orchestration with no parent.

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, AppErrorKind, ErrorDetails, EventKind, OrchestrationContext,
    OrchestrationRegistry,
};

use crate::support::{Env, assert_well_formed, count, kinds, no_activities};

#[tokio::test]
async fn sub_orchestrations_nested_three_deep() {
    let env = Env::new().await;
    let activities = ActivityRegistry::builder()
        .register("Leaf", |ctx: ActivityContext, input: String| async move {
            Ok(format!("leaf({input}) in {}", ctx.instance_id()))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Level",
            |ctx: OrchestrationContext, depth: String| async move {
                let depth: u32 = depth.parse().map_err(|e| format!("{e}"))?;
                let below = if depth < 3 {
                    ctx.schedule_sub_orchestration("Level", (depth + 1).to_string())
                        .await?
                } else {
                    ctx.schedule_activity("Leaf", depth.to_string()).await?
                };
                Ok(format!("L{depth}[{below}]"))
            },
        )
        .build();
    let rt = env.start(activities, orchestrations).await;

    env.client
        .start_orchestration("root", "Level", "0")
        .await
        .unwrap();
    let output = env.wait_completed("root").await;

    // Walk the hierarchy down through the management API.
    let admin = env.admin();
    let mut chain = vec!["root".to_string()];
    for _ in 0..3 {
        let parent = chain.last().unwrap().clone();
        let children = admin.list_children(&parent).await.unwrap();
        assert_eq!(children.len(), 1, "children of {parent}: {children:?}");
        assert_eq!(
            admin.get_parent_id(&children[0]).await.unwrap().as_deref(),
            Some(parent.as_str())
        );
        chain.push(children[0].clone());
    }
    let deepest = chain[3].clone();
    assert!(admin.list_children(&deepest).await.unwrap().is_empty());
    assert_eq!(admin.get_parent_id("root").await.unwrap(), None);
    assert_eq!(
        output,
        format!("L0[L1[L2[L3[leaf(3) in {deepest}]]]]"),
        "every level ran, innermost result bubbled up"
    );

    let tree = env.client.get_instance_tree("root").await.unwrap();
    assert_eq!(tree.root_id, "root");
    let mut all = tree.all_ids.clone();
    all.sort();
    let mut expected = chain.clone();
    expected.sort();
    assert_eq!(all, expected);

    for (depth, id) in chain.iter().enumerate() {
        let info = env.client.get_instance_info(id).await.unwrap();
        assert_eq!(info.status, "Completed", "{id}");
        assert_eq!(info.orchestration_name, "Level");
        let expected_parent = depth.checked_sub(1).map(|p| chain[p].clone());
        assert_eq!(info.parent_instance_id, expected_parent, "{id}");

        let hist = env.history(id).await;
        assert_well_formed(&hist, id, 1);
        match &hist[0].kind {
            EventKind::OrchestrationStarted {
                input,
                parent_instance,
                ..
            } => {
                assert_eq!(input, &depth.to_string());
                assert_eq!(parent_instance, &expected_parent);
            }
            other => panic!("{other:?}"),
        }
        if depth < 3 {
            assert_eq!(
                kinds(&hist),
                [
                    "OrchestrationStarted",
                    "SubOrchestrationScheduled",
                    "SubOrchestrationCompleted",
                    "OrchestrationCompleted"
                ]
            );
            // History names the child relative to its parent ("sub::<event id>").
            match &hist[1].kind {
                EventKind::SubOrchestrationScheduled { instance, .. } => assert_eq!(
                    duroxide::build_child_instance_id(id, instance),
                    chain[depth + 1]
                ),
                other => panic!("{other:?}"),
            }
        }
    }
    // The whole tree counts as four instances in the system metrics.
    let metrics = env.client.get_system_metrics().await.unwrap();
    assert_eq!(metrics.total_instances, 4);
    assert_eq!(metrics.completed_instances, 4);

    env.finish([rt]).await;
}

#[tokio::test]
async fn failing_child_surfaces_to_parent() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Child",
            |_ctx: OrchestrationContext, input: String| async move {
                Err::<String, _>(format!("child rejected {input}"))
            },
        )
        .register(
            "Parent",
            |ctx: OrchestrationContext, _in: String| async move {
                match ctx.schedule_sub_orchestration("Child", "x").await {
                    Ok(v) => Ok(format!("unexpected success {v}")),
                    Err(e) => Ok(format!("handled: {e}")),
                }
            },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    env.client
        .start_orchestration("parent", "Parent", "")
        .await
        .unwrap();
    assert_eq!(
        env.wait_completed("parent").await,
        "handled: child rejected x"
    );

    let children = env.admin().list_children("parent").await.unwrap();
    assert_eq!(children.len(), 1);
    let details = env.wait_failed(&children[0]).await;
    assert_eq!(details.category(), "application");
    assert!(matches!(&details, ErrorDetails::Application {
        kind: AppErrorKind::OrchestrationFailed, message, ..
    } if message == "child rejected x"));

    let hist = env.history("parent").await;
    assert_well_formed(&hist, "parent", 1);
    assert_eq!(
        count(
            &hist,
            |k| matches!(k, EventKind::SubOrchestrationFailed { details }
            if details.category() == "application")
        ),
        1,
        "{:?}",
        kinds(&hist)
    );

    env.finish([rt]).await;
}

#[tokio::test]
async fn detached_orchestration_runs_on_its_own() {
    let env = Env::new().await;
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Launcher",
            |ctx: OrchestrationContext, _in: String| async move {
                ctx.schedule_orchestration("Worker", "detached-worker", "job-7");
                Ok("launched".to_string())
            },
        )
        .register(
            "Worker",
            |ctx: OrchestrationContext, job: String| async move {
                let data = ctx.schedule_wait("Finish").await;
                Ok(format!("{job} finished with {data}"))
            },
        )
        .build();
    let rt = env.start(no_activities(), orchestrations).await;

    env.client
        .start_orchestration("launcher", "Launcher", "")
        .await
        .unwrap();
    // The launcher finishes without waiting for the orchestration it started.
    assert_eq!(env.wait_completed("launcher").await, "launched");
    let hist = env.history("launcher").await;
    assert!(hist.iter().any(|e| matches!(&e.kind,
        EventKind::OrchestrationChained { name, instance, input }
            if name == "Worker" && instance == "detached-worker" && input == "job-7")));

    env.wait_subscribed("detached-worker", "Finish").await;
    env.client
        .raise_event("detached-worker", "Finish", "ok")
        .await
        .unwrap();
    assert_eq!(
        env.wait_completed("detached-worker").await,
        "job-7 finished with ok"
    );
    // Detached means unrelated: no parent link, not part of the launcher's tree.
    assert_eq!(
        env.admin().get_parent_id("detached-worker").await.unwrap(),
        None
    );
    assert!(
        env.admin()
            .list_children("launcher")
            .await
            .unwrap()
            .is_empty()
    );

    env.finish([rt]).await;
}
