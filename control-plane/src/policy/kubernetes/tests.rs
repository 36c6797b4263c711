use std::sync::Arc;

use ferrule_policy::MeshDefault;
use spiffe::SpiffeId;

use super::*;
use crate::store::Store;

fn service() -> (tempfile::TempDir, Arc<Store>, PolicyService) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let store = Arc::new(Store::open(&dir.path().join("data")).unwrap());
    let svc = PolicyService::open(store.clone(), MeshDefault::AllowAuthenticated).unwrap();
    (dir, store, svc)
}

fn doc(name: &str, action: &str, from: &str) -> String {
    [
        "apiVersion: ferrule.dev/v1alpha1",
        "kind: AuthorizationPolicy",
        &format!("metadata: {{name: {name}}}"),
        "spec:",
        "  selector: {spiffeId: spiffe://td/ns/prod/sa/api}",
        &format!("  action: {action}"),
        &format!("  rules: [{{from: [{{spiffeId: {from}}}]}}]"),
    ]
    .join("\n")
}

fn policy(name: &str, action: &str, from: &str) -> Policy {
    ferrule_policy::parse_documents(&doc(name, action, from))
        .unwrap()
        .remove(0)
}

fn names(svc: &PolicyService) -> Vec<String> {
    let mut v: Vec<String> = svc
        .current()
        .set
        .policies()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn kubernetes_policies_join_the_set_under_one_version_sequence() {
    let (_dir, store, svc) = service();
    let op = svc
        .apply(&doc("ops", "ALLOW", "spiffe://td/ns/ops/sa/admin"), "alice")
        .unwrap();
    let web = policy("k8s/prod/allow-web", "ALLOW", "spiffe://td/ns/web/sa/app");
    let v1 = svc.replace_kubernetes(vec![web.clone()]).unwrap().unwrap();
    assert!(v1 > op.version);
    assert_eq!(svc.current().set.version(), v1);
    assert_eq!(names(&svc), ["k8s/prod/allow-web", "ops"]);
    let api = SpiffeId::new("spiffe://td/ns/prod/sa/api").unwrap();
    assert_eq!(PolicyService::documents_for(&svc.current(), &api).len(), 2);

    // Metadata for listings, and an audit row naming the source.
    let state = svc.current();
    let meta = state
        .meta
        .iter()
        .find(|m| m.name == "k8s/prod/allow-web")
        .unwrap();
    assert_eq!((meta.updated_by.as_str(), meta.version), ("kubernetes", v1));
    let audit = store.list_audit(1).unwrap();
    assert_eq!(
        (
            audit[0].who.as_str(),
            audit[0].action.as_str(),
            audit[0].target.as_str()
        ),
        ("kubernetes", "policy.create", "k8s/prod/allow-web")
    );

    // A relist finding the same set writes nothing.
    assert_eq!(svc.replace_kubernetes(vec![web.clone()]).unwrap(), None);
    assert_eq!(svc.current().set.version(), v1);
    assert_eq!(svc.upsert_kubernetes(web).unwrap(), None);

    // A change, then a removal: each one new version; the operator's policy stays.
    let changed = policy("k8s/prod/allow-web", "DENY", "spiffe://td/ns/web/sa/app");
    let v2 = svc.upsert_kubernetes(changed.clone()).unwrap().unwrap();
    assert!(v2 > v1);
    assert_eq!(
        svc.kubernetes_policy("k8s/prod/allow-web").as_ref(),
        Some(&changed)
    );
    let v3 = svc
        .remove_kubernetes("k8s/prod/allow-web")
        .unwrap()
        .unwrap();
    assert!(v3 > v2);
    assert_eq!(names(&svc), ["ops"]);
    assert_eq!(svc.remove_kubernetes("k8s/prod/allow-web").unwrap(), None);

    // An operator's apply continues the same sequence.
    let op2 = svc
        .apply(&doc("ops", "DENY", "spiffe://td/ns/ops/sa/admin"), "alice")
        .unwrap();
    assert!(op2.version > v3);
}

#[test]
fn a_relist_removes_policies_no_longer_listed() {
    let (_dir, _store, svc) = service();
    svc.replace_kubernetes(vec![
        policy("k8s/a/one", "ALLOW", "spiffe://td/x"),
        policy("k8s/b/two", "DENY", "spiffe://td/y"),
    ])
    .unwrap();
    svc.replace_kubernetes(vec![policy("k8s/b/two", "DENY", "spiffe://td/y")])
        .unwrap();
    assert_eq!(names(&svc), ["k8s/b/two"]);
    assert_eq!(svc.kubernetes_names(), ["k8s/b/two"]);
}

#[test]
fn operators_can_neither_apply_nor_delete_kubernetes_names() {
    let (_dir, _store, svc) = service();
    svc.replace_kubernetes(vec![policy("k8s/prod/p", "ALLOW", "spiffe://td/x")])
        .unwrap();
    let e = svc
        .apply(&doc("k8s/prod/p", "DENY", "spiffe://td/x"), "mallory")
        .unwrap_err();
    assert!(
        matches!(e, PolicyError::Managed(ref n) if n == "k8s/prod/p"),
        "{e}"
    );
    let e = svc.delete(&["k8s/prod/p".into()], "mallory").unwrap_err();
    assert!(matches!(e, PolicyError::Managed(_)), "{e}");
    assert_eq!(names(&svc), ["k8s/prod/p"]);
    // And the watcher cannot put an operator's name in the Kubernetes set.
    assert!(
        svc.upsert_kubernetes(policy("ops", "ALLOW", "spiffe://td/x"))
            .is_err()
    );
}

#[tokio::test]
async fn the_set_is_incomplete_until_the_first_listing() {
    let (_dir, _store, svc) = service();
    let svc = Arc::new(svc);
    svc.wait_complete().await;
    svc.await_kubernetes();
    let waiter = tokio::spawn({
        let svc = svc.clone();
        async move { svc.wait_complete().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    svc.upsert_kubernetes(policy("k8s/a/p", "ALLOW", "spiffe://td/x"))
        .unwrap();
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "an event before the first listing");
    // Even an empty listing completes it.
    svc.replace_kubernetes(vec![]).unwrap();
    waiter.await.unwrap();
}
