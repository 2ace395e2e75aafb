//! What many end-to-end tests make before they test something: a project whose process is one
//! script step, a release of it deployed, a package uploaded, a polling tentacle registered and
//! started. Each asserts its own success, naming what failed.

use std::path::Path;

use serde_json::{json, Value};

use crate::{upload, Generated, Node, Tentacle};

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

impl Node {
    /// A project `name` in the default space whose process is one script step `step`, on the
    /// targets with one of `roles` (on the node when none); its API path.
    pub fn script_project(&self, name: &str, step: &str, roles: &[&str], script: &str) -> String {
        let (status, project) = self.post("/api/spaces/default/projects", &json!({ "name": name }));
        assert_eq!(status, 201, "project {name}: {project}");
        let path = format!("/api/spaces/default/projects/{}", id(&project));
        let mut s = json!({"name": step, "action": {"type": "script", "script": script}});
        if !roles.is_empty() {
            s["target_roles"] = json!(roles);
        }
        let process = json!({"version": 1, "steps": [s]});
        let (status, saved) = self.request(
            "PUT",
            &format!("{path}/deploymentprocess"),
            Some(&process.to_string()),
        );
        assert_eq!(status, 200, "the process of {name}: {saved}");
        path
    }

    /// Makes release `version` of the project at `project` and deploys it to `environment` (an
    /// id); the deployment's task id (running, or queued).
    pub fn deploy_release(&self, project: &str, version: &str, environment: &str) -> String {
        let (status, release) = self.post(
            &format!("{project}/releases"),
            &json!({ "version": version }),
        );
        assert_eq!(status, 201, "release {version}: {release}");
        let (status, d) = self.post(
            "/api/spaces/default/deployments",
            &json!({"release_id": id(&release), "environment_id": environment}),
        );
        assert_eq!(status, 201, "deploy {version}: {d}");
        d["task_id"].as_str().expect("a task id").to_owned()
    }

    /// Uploads `package` as `package_id` `version` (zip) to the default space.
    pub fn upload_package(&self, package_id: &str, version: &str, package: &Generated) -> Value {
        let (status, added) = upload(
            self.http(),
            &self.url(&format!(
                "/api/spaces/Spaces-1/packages/raw?package_id={package_id}&version={version}&format=zip"
            )),
            &self.api_key(),
            "application/octet-stream",
            package.clone(),
            package.size,
            &[],
        );
        assert_eq!(status, 201, "upload {package_id} {version}: {added}");
        added
    }
}

impl Tentacle {
    /// A polling tentacle `name` under `dir`, registered through `node` with `role` in
    /// `environments` (made when missing); not started.
    pub fn polling(
        dir: &Path,
        name: &str,
        node: &Node,
        role: &str,
        environments: &[&str],
    ) -> Tentacle {
        let t = Tentacle::new(dir, name);
        node.make_environments(environments);
        t.register(
            &node.url(""),
            &node.api_key(),
            role,
            "polling",
            environments,
            &[],
        );
        t
    }
}
