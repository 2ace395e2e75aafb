//! `cuttle.v1.Projects`: settings through the document operations, the process and variables
//! through the operations REST's `…/deploymentprocess` and `…/variables` use.

use cuttle_core::plan::{Action, Condition, Process, Step, StoredVariable, VariableScope};
use cuttle_proto::v1 as pb;
use cuttle_proto::v1::projects_server::{Projects as Service, ProjectsServer};
use cuttle_storage::Document;
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use super::convert::{caller, invalid, required, status, text, timestamp};
use super::documents as docs;
use crate::resources::documents::DocumentResource;
use crate::resources::projects::{read_variables, replace_variables, Projects};
use crate::scoped::{Need, OPERATOR, READER};
use crate::AppState;

pub(super) const SERVICE: &str = "cuttle.v1.Projects";

pub(super) const NEEDS: &[(&str, Need)] = &[
    ("List", READER),
    ("Get", READER),
    ("Create", OPERATOR),
    ("Update", OPERATOR),
    ("Delete", OPERATOR),
    ("GetProcess", READER),
    ("UpdateProcess", OPERATOR),
    ("GetVariables", READER),
    ("UpdateVariables", OPERATOR),
];

pub(super) fn server(s: AppState) -> ProjectsServer<ProjectsApi> {
    ProjectsServer::new(ProjectsApi { s }).max_decoding_message_size(super::MAX_MESSAGE)
}

pub(super) struct ProjectsApi {
    s: AppState,
}

fn project(d: &Document) -> pb::Project {
    let retention = &d.body["retention"];
    let count = |k: &str| retention[k].as_u64().unwrap_or(0) as u32;
    pb::Project {
        id: format!("{}{}", Projects::ID_PREFIX, d.id),
        space_id: d.space.clone(),
        name: d.name.clone(),
        description: text(&d.body, "description"),
        lifecycle_id: d.body["lifecycle_id"].as_str().map(str::to_owned),
        retention: Some(pb::Retention {
            releases_to_keep: count("releases_to_keep"),
            releases_per_environment: count("releases_per_environment"),
        }),
        version: d.version,
        created_at: Some(timestamp(d.created_at)),
        modified_at: Some(timestamp(d.modified_at)),
    }
}

/// A project's settings as REST's write takes them.
fn settings(
    name: String,
    description: String,
    lifecycle_id: Option<String>,
    retention: Option<pb::Retention>,
) -> Value {
    let mut body = json!({"name": name, "description": description});
    if let Some(l) = lifecycle_id {
        body["lifecycle_id"] = json!(l);
    }
    if let Some(r) = retention {
        body["retention"] = json!({
            "releases_to_keep": r.releases_to_keep,
            "releases_per_environment": r.releases_per_environment,
        });
    }
    body
}

pub(super) fn step(s: &Step) -> pb::Step {
    let action = match &s.action {
        Action::Script {
            script,
            shell,
            timeout_secs,
        } => pb::step::Action::Script(pb::ScriptAction {
            script: script.clone(),
            shell: shell.clone(),
            timeout_secs: *timeout_secs,
        }),
        Action::DeployPackage {
            package_id,
            version,
            substitute_in_files,
            script,
            shell,
            timeout_secs,
        } => pb::step::Action::DeployPackage(pb::DeployPackageAction {
            package_id: package_id.clone(),
            version: version.clone(),
            substitute_in_files: substitute_in_files.clone(),
            script: script.clone(),
            shell: shell.clone(),
            timeout_secs: *timeout_secs,
        }),
    };
    let condition = match s.condition {
        Condition::Success => pb::StepCondition::Success,
        Condition::Always => pb::StepCondition::Always,
        Condition::Failure => pb::StepCondition::Failure,
    };
    pb::Step {
        name: s.name.clone(),
        target_roles: s.target_roles.clone(),
        action: Some(action),
        condition: condition as i32,
        parallel_with_previous: s.parallel_with_previous,
        max_parallel_targets: s.max_parallel_targets,
        environments: s.environments.clone(),
        enabled: Some(s.enabled),
    }
}

/// A step as written, with REST's defaults for what it leaves unset; the planner checks the
/// rest when the process is saved.
pub(super) fn core_step(i: usize, s: pb::Step) -> Result<Step, Status> {
    let shell = |sh: String| if sh.is_empty() { "sh".to_owned() } else { sh };
    let timeout = |t: u64| {
        if t == 0 {
            cuttle_core::plan::DEFAULT_STEP_TIMEOUT_SECS
        } else {
            t
        }
    };
    let action = match s.action {
        None => {
            return Err(invalid(
                &format!("steps[{i}].action"),
                "required: script or deploy_package",
            ))
        }
        Some(pb::step::Action::Script(a)) => Action::Script {
            script: a.script,
            shell: shell(a.shell),
            timeout_secs: timeout(a.timeout_secs),
        },
        Some(pb::step::Action::DeployPackage(a)) => Action::DeployPackage {
            package_id: a.package_id,
            version: a.version,
            substitute_in_files: a.substitute_in_files,
            script: a.script,
            shell: shell(a.shell),
            timeout_secs: timeout(a.timeout_secs),
        },
    };
    let condition = match pb::StepCondition::try_from(s.condition) {
        Ok(pb::StepCondition::Success) => Condition::Success,
        Ok(pb::StepCondition::Always) => Condition::Always,
        Ok(pb::StepCondition::Failure) => Condition::Failure,
        Err(_) => {
            return Err(invalid(
                &format!("steps[{i}].condition"),
                format!("unknown condition {}", s.condition),
            ))
        }
    };
    Ok(Step {
        name: s.name,
        target_roles: s.target_roles,
        action,
        condition,
        parallel_with_previous: s.parallel_with_previous,
        max_parallel_targets: s.max_parallel_targets,
        environments: s.environments,
        enabled: s.enabled.unwrap_or(true),
    })
}

fn process(doc: &Document, p: &Process) -> pb::Process {
    pb::Process {
        project_id: format!("{}{}", Projects::ID_PREFIX, doc.id),
        version: doc.version,
        steps: p.steps.iter().map(step).collect(),
    }
}

/// A variable as shown: a sensitive one never with its value.
pub(super) fn variable(v: &StoredVariable) -> pb::Variable {
    pb::Variable {
        id: v.id.clone(),
        name: v.name.clone(),
        value: if v.sensitive { None } else { v.value.clone() },
        scope: Some(pb::VariableScope {
            environments: v.scope.environments.clone(),
            roles: v.scope.roles.clone(),
            targets: v.scope.targets.clone(),
        }),
        sensitive: v.sensitive,
    }
}

fn variables(doc: &Document, vars: &[StoredVariable]) -> pb::Variables {
    pb::Variables {
        project_id: format!("{}{}", Projects::ID_PREFIX, doc.id),
        version: doc.version,
        variables: vars.iter().map(variable).collect(),
    }
}

/// Variables as REST's write takes them.
fn variables_write(vars: Vec<pb::Variable>) -> Value {
    let items: Vec<Value> = vars
        .into_iter()
        .map(|v| {
            let scope = v.scope.unwrap_or_default();
            let scope = VariableScope {
                environments: scope.environments,
                roles: scope.roles,
                targets: scope.targets,
            };
            let mut item = json!({"name": v.name, "scope": scope, "sensitive": v.sensitive});
            if !v.id.is_empty() {
                item["id"] = json!(v.id);
            }
            if let Some(value) = v.value {
                item["value"] = json!(value);
            }
            item
        })
        .collect();
    json!({ "variables": items })
}

#[tonic::async_trait]
impl Service for ProjectsApi {
    async fn list(
        &self,
        req: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<pb::ListProjectsReply>, Status> {
        let all = docs::list::<Projects>(&self.s, &req.get_ref().space).await?;
        Ok(Response::new(pb::ListProjectsReply {
            items: all.iter().map(project).collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        let r = req.get_ref();
        let d = docs::get::<Projects>(&self.s, (&r.space, &r.id)).await?;
        Ok(Response::new(project(&d)))
    }

    async fn create(
        &self,
        req: Request<pb::CreateProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let body = settings(r.name, r.description, r.lifecycle_id, r.retention);
        let d = docs::create::<Projects>(&self.s, &caller, &r.space, body).await?;
        Ok(Response::new(project(&d)))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let body = settings(r.name, r.description, r.lifecycle_id, r.retention);
        let at = (&*r.space, &*r.id);
        let d = docs::update::<Projects>(&self.s, &caller, at, (body, r.version)).await?;
        Ok(Response::new(project(&d)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteProjectRequest>,
    ) -> Result<Response<pb::DeleteProjectReply>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        docs::delete::<Projects>(&self.s, &caller, (&r.space, &r.id), r.version).await?;
        Ok(Response::new(pb::DeleteProjectReply {}))
    }

    async fn get_process(
        &self,
        req: Request<pb::GetProcessRequest>,
    ) -> Result<Response<pb::Process>, Status> {
        let r = req.get_ref();
        let (doc, p) = docs::process::<Projects>(&self.s, (&r.space, &r.id)).await?;
        Ok(Response::new(process(&doc, &p)))
    }

    async fn update_process(
        &self,
        req: Request<pb::UpdateProcessRequest>,
    ) -> Result<Response<pb::Process>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let at = (&*r.space, &*r.id);
        let action = "project.process.update";
        let (doc, p) =
            docs::update_process::<Projects>(&self.s, &caller, at, (r.steps, r.version), action)
                .await?;
        Ok(Response::new(process(&doc, &p)))
    }

    async fn get_variables(
        &self,
        req: Request<pb::GetVariablesRequest>,
    ) -> Result<Response<pb::Variables>, Status> {
        let r = req.get_ref();
        let space = required("space", &r.space)?;
        let (doc, vars) = read_variables(&self.s, (space, &r.id))
            .await
            .map_err(status)?;
        Ok(Response::new(variables(&doc, &vars)))
    }

    async fn update_variables(
        &self,
        req: Request<pb::UpdateVariablesRequest>,
    ) -> Result<Response<pb::Variables>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let space = required("space", &r.space)?;
        let body = variables_write(r.variables);
        let (doc, vars) =
            replace_variables(&self.s, &caller, (space, &r.id), body, Some(r.version))
                .await
                .map_err(status)?;
        Ok(Response::new(variables(&doc, &vars)))
    }
}
