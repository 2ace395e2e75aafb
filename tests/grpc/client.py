"""A client of Cuttle's public gRPC API written apart from the server: stubs generated from
proto/ with grpcio-tools at test time, the services found by reflection, then a project made
and deployed, followed to its end, and every error checked for its status code and details.

Run by tests/tests/grpc.rs. Settings come from the environment:
  CUTTLE_GRPC_TARGET   host:port of the public gRPC API (plain HTTP/2, or TLS with
                       CUTTLE_GRPC_CA naming the PEM file to trust)
  CUTTLE_KEY           an admin key; CUTTLE_READER_KEY a reader key
  CUTTLE_PROTO_DIR     the repository's proto/ directory
  CUTTLE_SUFFIX        makes names unique to this run
Prints one line per check; exits non-zero with the reason on the first failure.
"""

import glob
import hashlib
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


def generate(proto_dir):
    out = tempfile.mkdtemp(prefix="cuttle-stubs-")
    files = sorted(
        os.path.relpath(p, proto_dir)
        for p in glob.glob(os.path.join(proto_dir, "cuttle", "v1", "*.proto"))
    )
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}",
            f"--grpc_python_out={out}"] + files
    if protoc.main(args) != 0:
        sys.exit("protoc failed on " + " ".join(files))
    sys.path.insert(0, out)


def check(cond, what):
    if not cond:
        sys.exit(f"FAIL: {what}")
    print(f"ok: {what}", flush=True)


def main():
    generate(os.environ["CUTTLE_PROTO_DIR"])
    from cuttle.v1 import (api_keys_pb2, api_keys_pb2_grpc, artifacts_pb2, artifacts_pb2_grpc,
                           events_pb2, events_pb2_grpc, targets_pb2, targets_pb2_grpc)
    from cuttle.v1 import (deployments_pb2, deployments_pb2_grpc, environments_pb2,
                           environments_pb2_grpc, lifecycles_pb2, lifecycles_pb2_grpc,
                           nodes_pb2, nodes_pb2_grpc, packages_pb2, packages_pb2_grpc,
                           projects_pb2, projects_pb2_grpc, runbooks_pb2, runbooks_pb2_grpc,
                           releases_pb2, releases_pb2_grpc, spaces_pb2, spaces_pb2_grpc,
                           tasks_pb2, tasks_pb2_grpc)
    from google.protobuf import struct_pb2
    from google.rpc import error_details_pb2
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)
    from grpc_status import rpc_status

    target = os.environ["CUTTLE_GRPC_TARGET"]
    ca = os.environ.get("CUTTLE_GRPC_CA")
    if ca:
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    admin = [("x-api-key", os.environ["CUTTLE_KEY"])]
    reader = [("authorization", "Bearer " + os.environ["CUTTLE_READER_KEY"])]
    suffix = os.environ.get("CUTTLE_SUFFIX", str(os.getpid()))

    # Reflection and health need no key.
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    want = {f"cuttle.v1.{s}" for s in
            ["Tasks", "Spaces", "Environments", "Projects", "Releases", "Deployments",
             "Packages", "Nodes", "Lifecycles", "Runbooks", "Events", "ApiKeys", "Targets",
             "Artifacts"]}
    check(want <= services, f"reflection lists {sorted(want)} (got {sorted(services)})")
    check("cuttle.v1.WorkerControl" not in services, "reflection hides the internal services")
    # grpc.reflection.v1 too (Python's package speaks v1alpha): its list_services request by
    # hand (field 7, a string), its answer read for the names.
    v1 = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                               request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
    answer = b"".join(v1(iter([b"\x3a\x01*"]), timeout=10))
    check(b"cuttle.v1.Deployments" in answer and b"WorkerControl" not in answer,
          "reflection v1 lists the services too")
    health = health_pb2_grpc.HealthStub(channel)
    for svc in ["", "cuttle.v1.Tasks", "cuttle.v1.Deployments"]:
        check(health.Check(health_pb2.HealthCheckRequest(service=svc)).status
              == health_pb2.HealthCheckResponse.SERVING, f"health says SERVING for {svc!r}")

    def fails(call, code, what, reason=None, field=None):
        try:
            call()
        except grpc.RpcError as e:
            check(e.code() == code, f"{what}: {code.name} (got {e.code().name}: {e.details()})")
            st = rpc_status.from_call(e)
            infos, violations = [], []
            for d in (st.details if st else []):
                if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    d.Unpack(info)
                    infos.append(info)
                if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    br = error_details_pb2.BadRequest()
                    d.Unpack(br)
                    violations += [v.field for v in br.field_violations]
            if reason:
                check([i.reason for i in infos] == [reason] and infos[0].domain == "cuttle",
                      f"{what}: ErrorInfo reason {reason}")
            if field:
                check(field in violations, f"{what}: BadRequest names {field} ({violations})")
            return
        sys.exit(f"FAIL: {what}: the call succeeded")

    spaces = spaces_pb2_grpc.SpacesStub(channel)
    envs = environments_pb2_grpc.EnvironmentsStub(channel)
    projects = projects_pb2_grpc.ProjectsStub(channel)
    releases = releases_pb2_grpc.ReleasesStub(channel)
    deployments = deployments_pb2_grpc.DeploymentsStub(channel)
    tasks = tasks_pb2_grpc.TasksStub(channel)

    default = spaces.Get(spaces_pb2.GetSpaceRequest(space="Default"), metadata=reader)
    check(default.id.startswith("Spaces-"), f"the Default space is {default.id}")
    made = spaces.Create(spaces_pb2.CreateSpaceRequest(
        name=f"Platform-{suffix}", description="made over gRPC"), metadata=admin)
    check(made.id.startswith("Spaces-") and made.version == 1, f"space {made.id} made")
    check(made.id in [x.id for x in spaces.List(spaces_pb2.ListSpacesRequest(),
                                                 metadata=reader).items], "and listed")
    fails(lambda: spaces.Create(spaces_pb2.CreateSpaceRequest(name=f"platform-{suffix}"),
                                metadata=admin),
          grpc.StatusCode.ALREADY_EXISTS, "a space name taken, whatever its case")
    fails(lambda: spaces.Create(spaces_pb2.CreateSpaceRequest(name=f"Other-{suffix}"),
                                metadata=reader),
          grpc.StatusCode.PERMISSION_DENIED, "a reader making a space")

    env = envs.Create(environments_pb2.CreateEnvironmentRequest(
        space="Default", name=f"Staging-{suffix}", description="made over gRPC"), metadata=admin)
    check(env.id.startswith("Environments-") and env.version >= 1,
          f"environment {env.id} made at version {env.version}")
    listed = envs.List(environments_pb2.ListEnvironmentsRequest(space="Default"), metadata=reader)
    check(env.id in [e.id for e in listed.items], "the reader lists it")

    lifecycles = lifecycles_pb2_grpc.LifecyclesStub(channel)
    fails(lambda: lifecycles.Create(lifecycles_pb2.CreateLifecycleRequest(
        space="Default", name=f"Bad-{suffix}",
        phases=[lifecycles_pb2.Phase(name="One", environments=["Environments-999999"])]),
        metadata=admin), grpc.StatusCode.INVALID_ARGUMENT, "a phase naming no environment")
    lifecycle = lifecycles.Create(lifecycles_pb2.CreateLifecycleRequest(
        space="Default", name=f"Straight-{suffix}",
        phases=[lifecycles_pb2.Phase(name="Only", environments=[env.id])]), metadata=admin)
    check(lifecycle.phases[0].environments == [env.id], f"lifecycle {lifecycle.id}")
    project = projects.Create(projects_pb2.CreateProjectRequest(
        space="Default", name=f"Shop-{suffix}", description="over gRPC",
        lifecycle_id=lifecycle.id), metadata=admin)
    check(project.lifecycle_id == lifecycle.id, "the project goes through it")
    check(project.id.startswith("Projects-"), f"project {project.id}")
    step = projects_pb2.Step(
        name="Greet",
        script=projects_pb2.ScriptAction(
            script="echo \"hello from #{Greeting} over gRPC\"\nfor i in 1 2 3; do echo line $i; done\n"
                   "seq 1 20000 > report.txt\n"
                   "echo \"##cuttle[createArtifact path='report.txt' name='report.txt']\""),
        environments=[env.id])
    process = projects.UpdateProcess(projects_pb2.UpdateProcessRequest(
        space="Default", id=project.id, steps=[step], version=project.version), metadata=admin)
    check(len(process.steps) == 1 and process.steps[0].script.shell == "sh"
          and process.steps[0].script.timeout_secs == 3600,
          "the process is saved with REST's defaults filled in")
    variables = projects.UpdateVariables(projects_pb2.UpdateVariablesRequest(
        space="Default", id=project.id, version=process.version, variables=[
            projects_pb2.Variable(name="Greeting", value="Cuttle"),
            projects_pb2.Variable(name="Secret", value="hunter2", sensitive=True),
        ]), metadata=admin)
    secret = [v for v in variables.variables if v.name == "Secret"][0]
    check(secret.sensitive and not secret.HasField("value"),
          "a sensitive value is never sent back")

    # A stale version, then bad arguments naming the field.
    fails(lambda: projects.UpdateProcess(projects_pb2.UpdateProcessRequest(
        space="Default", id=project.id, steps=[step], version=project.version), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION, "a write at a stale version", reason="conflict")
    bad = projects_pb2.Step(name="", script=projects_pb2.ScriptAction(script="true"))
    fails(lambda: projects.UpdateProcess(projects_pb2.UpdateProcessRequest(
        space="Default", id=project.id, steps=[bad], version=variables.version), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT, "a step without a name", reason="bad_request",
        field="steps[0].name")
    fails(lambda: envs.Create(environments_pb2.CreateEnvironmentRequest(
        space="Default", name=f"Staging-{suffix}"), metadata=admin),
        grpc.StatusCode.ALREADY_EXISTS, "a name taken")
    fails(lambda: tasks.Get(tasks_pb2.GetTaskRequest(id="ServerTasks-999999999"), metadata=reader),
        grpc.StatusCode.NOT_FOUND, "an unknown task", reason="not_found")
    fails(lambda: envs.Create(environments_pb2.CreateEnvironmentRequest(
        space="Default", name="x"), metadata=reader),
        grpc.StatusCode.PERMISSION_DENIED, "a reader making an environment", reason="forbidden")
    fails(lambda: envs.List(environments_pb2.ListEnvironmentsRequest(space="Default"),
                            metadata=[("x-api-key", "not-a-key")]),
        grpc.StatusCode.UNAUTHENTICATED, "an unknown key")
    fails(lambda: envs.List(environments_pb2.ListEnvironmentsRequest(space="Default")),
        grpc.StatusCode.UNAUTHENTICATED, "no key")
    fails(lambda: envs.List(environments_pb2.ListEnvironmentsRequest(space=""), metadata=reader),
        grpc.StatusCode.INVALID_ARGUMENT, "no space", field="space")
    raw = channel.unary_unary("/cuttle.v1.Tasks/Get", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
    fails(lambda: raw(b"\xff\xff\xff", metadata=reader, timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT, "a message that is not protobuf")
    fails(lambda: tasks.Get(tasks_pb2.GetTaskRequest(id="x" * (2 << 20)), metadata=reader,
                            timeout=30),
        grpc.StatusCode.RESOURCE_EXHAUSTED, "a message over 1 MiB")

    release = releases.Create(releases_pb2.CreateReleaseRequest(
        space="Default", project_id=project.id, version="1.0.0", notes="gRPC"), metadata=admin)
    check(release.version == "1.0.0" and len(release.steps) == 1,
          f"release {release.id} freezes the process")
    deployment = deployments.Create(deployments_pb2.CreateDeploymentRequest(
        space="Default", release_id=release.id, environment_id=env.id), metadata=admin)
    check(deployment.id.startswith("Deployments-"), f"deployment {deployment.id} queued")

    states, steps, log = [], [], ""
    for e in deployments.Watch(deployments_pb2.WatchDeploymentRequest(
            space="Default", id=deployment.id), metadata=reader, timeout=120):
        kind = e.WhichOneof("event")
        if kind == "deployment":
            states.append(tasks_pb2.TaskState.Name(e.deployment.state))
        elif kind == "step":
            steps.append((e.step.number, e.step.name, e.step.status))
        else:
            log += e.log.text
    check(states[-1] == "TASK_STATE_SUCCESS", f"Watch saw the deployment through {states}")
    check(steps == [(1, "Greet", "started"), (1, "Greet", "succeeded")],
          f"Watch saw the step start and end: {steps}")
    check("hello from Cuttle over gRPC" in log, "the log carries the substituted variable")

    # What the step handed over, listed and downloaded whole and by range.
    artifacts = artifacts_pb2_grpc.ArtifactsStub(channel)
    handed = artifacts.List(artifacts_pb2.ListArtifactsRequest(task_id=deployment.task_id),
                            metadata=reader).items
    expected = "".join(f"{i}\n" for i in range(1, 20001)).encode()
    check([a.name for a in handed] == ["report.txt"] and handed[0].size == len(expected),
          f"the deployment's artifacts: {[(a.id, a.size) for a in handed]}")
    whole = b"".join(c.data for c in artifacts.Download(artifacts_pb2.DownloadArtifactRequest(
        task_id=deployment.task_id, id=handed[0].id), metadata=reader, timeout=60))
    part = b"".join(c.data for c in artifacts.Download(artifacts_pb2.DownloadArtifactRequest(
        task_id=deployment.task_id, id=handed[0].id, offset=10, length=20), metadata=reader,
        timeout=60))
    check(whole == expected and part == expected[10:30], "downloaded whole and by range")
    fails(lambda: list(artifacts.Download(artifacts_pb2.DownloadArtifactRequest(
        task_id=deployment.task_id, id="nowhere/none"), metadata=reader, timeout=60)),
        grpc.StatusCode.NOT_FOUND, "an artifact the task has not")

    # The same log through Tasks.WatchLog, whole, then resumed from the middle.
    whole = ""
    chunks = []
    for c in tasks.WatchLog(tasks_pb2.WatchLogRequest(id=deployment.task_id), metadata=reader,
                            timeout=60):
        chunks.append(c)
        whole += c.text
    check(whole == log, "WatchLog gives the log Watch gave")
    middle = whole.index("line 2")
    rest = "".join(c.text for c in tasks.WatchLog(
        tasks_pb2.WatchLogRequest(id=deployment.task_id, offset=len(whole[:middle].encode())),
        metadata=reader, timeout=60))
    check(rest == whole[middle:], "WatchLog resumes from an offset")

    # A task through Tasks.Create; its arguments are a Struct, numbers included.
    args = struct_pb2.Struct()
    args.update({"script": "echo queued over gRPC", "timeout_secs": 60})
    t = tasks.Create(tasks_pb2.CreateTaskRequest(kind="AdHocScript", arguments=args,
                                                 description="gRPC smoke"), metadata=admin)
    check(t.state == tasks_pb2.TASK_STATE_QUEUED, f"task {t.id} queued")
    deadline = time.time() + 60
    while time.time() < deadline:
        t = tasks.Get(tasks_pb2.GetTaskRequest(id=t.id), metadata=reader)
        if t.state not in (tasks_pb2.TASK_STATE_QUEUED, tasks_pb2.TASK_STATE_EXECUTING):
            break
        time.sleep(0.2)
    check(t.state == tasks_pb2.TASK_STATE_SUCCESS, f"it ran: {tasks_pb2.TaskState.Name(t.state)}")
    page = tasks.List(tasks_pb2.ListTasksRequest(kind="AdHocScript", limit=1), metadata=reader)
    check(len(page.items) == 1 and page.next, "List pages")
    fails(lambda: tasks.Create(tasks_pb2.CreateTaskRequest(kind="AdHocScript"), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT, "a task without its arguments")
    if os.environ.get("CUTTLE_CHECK_STREAM_LIMIT"):
        # Eight streams at once per caller on a node; the ninth is refused; streams that end
        # (the client cancels) give their places back at once.
        sleeper = struct_pb2.Struct()
        sleeper.update({"script": "echo started; sleep 600", "timeout_secs": 900})
        long = tasks.Create(tasks_pb2.CreateTaskRequest(kind="AdHocScript", arguments=sleeper),
                            metadata=admin)

        def watch():
            return tasks.WatchLog(tasks_pb2.WatchLogRequest(id=long.id), metadata=reader,
                                  timeout=60)

        for attempt in (1, 2):
            held = [watch() for _ in range(8)]
            for h in held:
                # Its first line came: the stream is open and holds its place.
                check("started" in next(h).text, f"stream open (round {attempt})")
            fails(lambda: next(watch()), grpc.StatusCode.RESOURCE_EXHAUSTED,
                  f"a ninth stream (round {attempt})")
            for h in held:
                h.cancel()
            # The node notices the cancels: a stream opens again within a few seconds.
            deadline = time.time() + 10
            while True:
                try:
                    probe = watch()
                    next(probe)
                    probe.cancel()
                    break
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.time() > deadline:
                        raise
                    time.sleep(0.1)
        check(True, "cancelled streams gave their places back")
        tasks.Cancel(tasks_pb2.CancelTaskRequest(id=long.id), metadata=admin)

    # A runbook of the project: its process, published, run in the environment, followed.
    runbooks = runbooks_pb2_grpc.RunbooksStub(channel)
    rb = runbooks.Create(runbooks_pb2.CreateRunbookRequest(
        space="Default", name=f"Restart-{suffix}", project_id=project.id), metadata=admin)
    fails(lambda: runbooks.Run(runbooks_pb2.RunRunbookRequest(
        space="Default", id=rb.id, environment_id=env.id), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION, "running a runbook never published")
    rp = runbooks.UpdateProcess(runbooks_pb2.UpdateRunbookProcessRequest(
        space="Default", id=rb.id, version=rb.version, steps=[projects_pb2.Step(
            name="Restart", script=projects_pb2.ScriptAction(script="echo restarting #{Greeting}"))]),
        metadata=admin)
    check(len(rp.steps) == 1, "the runbook's process is saved")
    published = runbooks.Publish(runbooks_pb2.PublishRunbookRequest(space="Default", id=rb.id),
                                 metadata=admin)
    check(published.HasField("published_at") and published.published_by.startswith("admin"),
          f"published by {published.published_by}")
    run = runbooks.Run(runbooks_pb2.RunRunbookRequest(space="Default", id=rb.id,
                                                      environment_id=env.id), metadata=admin)
    run_log = "".join(c.text for c in tasks.WatchLog(tasks_pb2.WatchLogRequest(id=run.id),
                                                     metadata=reader, timeout=120))
    ran = tasks.Get(tasks_pb2.GetTaskRequest(id=run.id), metadata=reader)
    check(ran.kind == "RunbookRun" and ran.state == tasks_pb2.TASK_STATE_SUCCESS
          and "restarting Cuttle" in run_log, "the runbook ran with the project's variables")

    # Nodes: listed; a task cap changed and put back.
    nodes = nodes_pb2_grpc.NodesStub(channel)
    listed_nodes = nodes.List(nodes_pb2.ListNodesRequest(), metadata=reader).items
    check(len(listed_nodes) >= 1 and all(n.online for n in listed_nodes),
          f"nodes: {[n.name for n in listed_nodes]}")
    first = listed_nodes[0]
    fails(lambda: nodes.Update(nodes_pb2.UpdateNodeRequest(name=first.name, task_cap=3),
                               metadata=reader),
          grpc.StatusCode.PERMISSION_DENIED, "a reader changing a node")
    changed = nodes.Update(nodes_pb2.UpdateNodeRequest(name=first.name, task_cap=first.task_cap + 1),
                           metadata=admin)
    check(changed.task_cap == first.task_cap + 1 and not changed.draining,
          "an admin changes its task cap; draining stays")
    nodes.Update(nodes_pb2.UpdateNodeRequest(name=first.name, task_cap=first.task_cap),
                 metadata=admin)
    if os.environ.get("CUTTLE_CHECK_DRAIN"):
        sleeper = struct_pb2.Struct()
        sleeper.update({"duration_ms": 1500})
        busy = tasks.Create(tasks_pb2.CreateTaskRequest(kind="Sleep", arguments=sleeper),
                            metadata=admin)
        deadline = time.time() + 30
        while tasks.Get(tasks_pb2.GetTaskRequest(id=busy.id), metadata=reader).state \
                == tasks_pb2.TASK_STATE_QUEUED and time.time() < deadline:
            time.sleep(0.05)
        seen = [n.running_tasks for n in nodes.Drain(nodes_pb2.DrainNodeRequest(name=first.name),
                                                     metadata=admin, timeout=60)]
        check(seen[0] >= 1 and seen[-1] == 0,
              f"Drain follows the node until it runs nothing: running tasks {seen}")
        done = tasks.Get(tasks_pb2.GetTaskRequest(id=busy.id), metadata=reader)
        check(done.state == tasks_pb2.TASK_STATE_SUCCESS, "its task finished first")
        back = nodes.Update(nodes_pb2.UpdateNodeRequest(name=first.name, draining=False),
                            metadata=admin)
        check(not back.draining, "undrained")

    fails(lambda: nodes.Delete(nodes_pb2.DeleteNodeRequest(name=first.name), metadata=reader),
          grpc.StatusCode.PERMISSION_DENIED, "a reader deleting a node")
    fails(lambda: nodes.Delete(nodes_pb2.DeleteNodeRequest(name=f"no-such-node-{suffix}"),
                               metadata=admin),
          grpc.StatusCode.NOT_FOUND, "deleting a node the cluster does not have")

    # WatchTasks: a Sleep task seen from queued to its end; a second watch wants only successes
    # of the project's deployments, and sees none of the Sleep's.
    import threading
    seen, only_success = [], []
    everything = tasks.WatchTasks(tasks_pb2.WatchTasksRequest(kind="Sleep"), metadata=reader,
                                  timeout=60)
    successes = tasks.WatchTasks(tasks_pb2.WatchTasksRequest(
        state=tasks_pb2.TASK_STATE_SUCCESS, project_id=project.id), metadata=reader, timeout=60)
    def follow(stream, into):
        try:
            for t in stream:
                into.append(t)
        except grpc.RpcError:
            pass
    threads = [threading.Thread(target=follow, args=(everything, seen)),
               threading.Thread(target=follow, args=(successes, only_success))]
    for th in threads:
        th.start()
    time.sleep(0.5)
    watched = tasks.Create(tasks_pb2.CreateTaskRequest(kind="Sleep", arguments=sleep_args(
        struct_pb2)), metadata=admin)
    deadline = time.time() + 30
    while time.time() < deadline and not any(
            t.id == watched.id and t.state == tasks_pb2.TASK_STATE_SUCCESS for t in seen):
        time.sleep(0.05)
    everything.cancel()
    successes.cancel()
    for th in threads:
        th.join()
    states = [tasks_pb2.TaskState.Name(t.state) for t in seen if t.id == watched.id]
    check(states and states[-1] == "TASK_STATE_SUCCESS" and all(t.kind == "Sleep" for t in seen),
          f"WatchTasks saw {watched.id} through {states}")
    check(not only_success, "a watch for the project's deployments saw none of it")

    # API keys: an admin's. A key made here works at once, shows its secret once, and stops
    # working when revoked.
    keys = api_keys_pb2_grpc.ApiKeysStub(channel)
    fails(lambda: keys.List(api_keys_pb2.ListApiKeysRequest(), metadata=reader),
          grpc.StatusCode.PERMISSION_DENIED, "a reader listing keys")
    fails(lambda: keys.Create(api_keys_pb2.CreateApiKeyRequest(name="x", scope="king"),
                              metadata=admin),
          grpc.StatusCode.INVALID_ARGUMENT, "a scope that does not exist", field="scope")
    made = keys.Create(api_keys_pb2.CreateApiKeyRequest(
        name=f"ci-{suffix}", scope="deployer", expires_in="1h"), metadata=admin)
    check(made.secret.startswith(made.key.prefix) and made.key.scope == "deployer"
          and made.key.HasField("expires_at"), f"key {made.key.id} made, its secret sent once")
    listed_keys = keys.List(api_keys_pb2.ListApiKeysRequest(), metadata=admin).items
    check(made.key.id in [k.id for k in listed_keys]
          and all(made.secret not in str(k) for k in listed_keys), "listed without its secret")
    fresh = [("x-api-key", made.secret)]
    t = tasks.Create(tasks_pb2.CreateTaskRequest(kind="Sleep", arguments=sleep_args(struct_pb2)),
                     metadata=fresh)
    check(t.id.startswith("ServerTasks-"), "the new deployer key queues a task")
    keys.Revoke(api_keys_pb2.RevokeApiKeyRequest(id=made.key.id), metadata=admin)
    deadline = time.time() + 10
    while True:
        try:
            tasks.Get(tasks_pb2.GetTaskRequest(id=t.id), metadata=fresh)
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNAUTHENTICATED,
                  f"the revoked key is refused ({e.code().name})")
            break
        if time.time() > deadline:
            sys.exit("FAIL: a revoked key still works after 10 s")
        time.sleep(0.2)

    # Targets: one an operator registered over REST, read, placed and removed here.
    target_id = os.environ.get("CUTTLE_TARGET_ID")
    if target_id:
        targets = targets_pb2_grpc.TargetsStub(channel)
        listed_targets = targets.List(targets_pb2.ListTargetsRequest(), metadata=reader).items
        check(target_id in [x.id for x in listed_targets], f"target {target_id} listed")
        fails(lambda: targets.Update(targets_pb2.UpdateTargetRequest(
            id=target_id, roles=targets_pb2.StringList(values=["no-such-role"])), metadata=admin),
            grpc.StatusCode.INVALID_ARGUMENT, "a role nothing uses")
        moved = targets.Update(targets_pb2.UpdateTargetRequest(
            id=target_id, name=f"web-{suffix}", environments=targets_pb2.StringList(
                values=[env.name])), metadata=admin)
        check(moved.name == f"web-{suffix}" and moved.environments == [env.name]
              and moved.comms == "listening", "renamed and placed; the rest stays")
        targets.Delete(targets_pb2.DeleteTargetRequest(id=target_id), metadata=admin)
        fails(lambda: targets.Get(targets_pb2.GetTargetRequest(id=target_id), metadata=reader),
              grpc.StatusCode.NOT_FOUND, "the removed target")

    # The audit: what this run did, listed and exported.
    events = events_pb2_grpc.EventsStub(channel)
    recent = events.List(events_pb2.ListEventsRequest(limit=1000), metadata=reader).items
    actions = {e.action for e in recent}
    check({"environment.create", "project.process.update", "api_key.revoke"} <= actions,
          "List has this run's events")
    revoked = [e for e in recent if e.action == "api_key.revoke" and e.target == made.key.id]
    check(len(revoked) == 1 and revoked[0].actor.startswith("admin"), "with who did it")
    exported = list(events.Export(events_pb2.ExportEventsRequest(since=revoked[0].occurred_at),
                                  metadata=reader, timeout=60))
    check(exported and exported[0].occurred_at.ToMilliseconds()
          >= revoked[0].occurred_at.ToMilliseconds()
          and made.key.id in [e.target for e in exported], "Export streams them from a time")

    packages = packages_pb2_grpc.PackagesStub(channel)
    mib = int(os.environ.get("CUTTLE_PACKAGE_MIB", "4"))
    package_round_trip(packages, packages_pb2, admin, reader, suffix, mib, fails)

    # The environment stays while a lifecycle names it; out of the lifecycle, it goes. The
    # lifecycle stays while a project uses it.
    current = envs.Get(environments_pb2.GetEnvironmentRequest(space="Default", id=env.id),
                       metadata=reader)
    fails(lambda: envs.Delete(environments_pb2.DeleteEnvironmentRequest(
        space="Default", id=env.id, version=current.version), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION, "deleting an environment a lifecycle names")
    emptied = lifecycles.Update(lifecycles_pb2.UpdateLifecycleRequest(
        space="Default", id=lifecycle.id, name=lifecycle.name, phases=[],
        version=lifecycle.version), metadata=admin)
    check(len(emptied.phases) == 0 and emptied.version > lifecycle.version,
          "the lifecycle is changed at the version read")
    envs.Delete(environments_pb2.DeleteEnvironmentRequest(
        space="Default", id=env.id, version=current.version), metadata=admin)
    fails(lambda: envs.Get(environments_pb2.GetEnvironmentRequest(space="Default", id=env.id),
                           metadata=reader),
        grpc.StatusCode.NOT_FOUND, "the deleted environment")
    fails(lambda: lifecycles.Delete(lifecycles_pb2.DeleteLifecycleRequest(
        space="Default", id=lifecycle.id), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION, "deleting a lifecycle a project uses")
    print("all checks passed", flush=True)


CHUNK = 1 << 20


def sleep_args(struct_pb2):
    args = struct_pb2.Struct()
    args.update({"duration_ms": 0})
    return args


def package_bytes(mib):
    """A `mib` MiB file that starts as a gzip does, in 1 MiB pieces, the same on every call."""
    block = bytearray(hashlib.sha256(b"cuttle").digest() * (CHUNK // 32))
    for i in range(mib):
        block[0:8] = i.to_bytes(8, "big")
        if i == 0:
            block[0:3] = b"\x1f\x8b\x08"
        yield bytes(block)


def package_round_trip(packages, pb, admin, reader, suffix, mib, fails):
    sha = hashlib.sha256()
    for piece in package_bytes(mib):
        sha.update(piece)
    digest = sha.hexdigest()
    name = f"Grpc.Package.{suffix}"

    def upload(version, sha256, pieces):
        header = pb.UploadPackageHeader(space="Default", package_id=name, version=version,
                                        format="tar.gz", sha256=sha256)
        def messages():
            yield pb.UploadPackageRequest(header=header)
            for piece in pieces:
                yield pb.UploadPackageRequest(data=piece)
        return packages.Upload(messages(), metadata=admin, timeout=600)

    started = time.time()
    p = upload("1.0.0", digest, package_bytes(mib))
    secs = time.time() - started
    check(p.size == mib * CHUNK and p.sha256 == digest,
          f"uploaded {mib} MiB in {secs:.1f} s ({mib / max(secs, 0.001):.0f} MiB/s), hash equal")
    fails(lambda: upload("1.0.0", digest, package_bytes(1)), grpc.StatusCode.ALREADY_EXISTS,
          "the same version again")
    fails(lambda: upload("1.0.1", "0" * 64, package_bytes(2)), grpc.StatusCode.INVALID_ARGUMENT,
          "a hash that does not match")
    fails(lambda: packages.Get(pb.GetPackageRequest(space="Default", package_id=name,
                                                    version="1.0.1"), metadata=reader),
          grpc.StatusCode.NOT_FOUND, "nothing kept of it")

    started = time.time()
    got = hashlib.sha256()
    size = 0
    first = None
    for chunk in packages.Download(pb.DownloadPackageRequest(
            space="Default", package_id=name, version="1.0.0"), metadata=reader, timeout=600):
        if first is None:
            first = chunk
        check_offset = chunk.offset == size
        if not check_offset:
            sys.exit(f"FAIL: a chunk at {chunk.offset}, expected {size}")
        got.update(chunk.data)
        size += len(chunk.data)
    secs = time.time() - started
    check(got.hexdigest() == digest and size == mib * CHUNK and first.package.sha256 == digest,
          f"downloaded {mib} MiB in {secs:.1f} s ({mib / max(secs, 0.001):.0f} MiB/s), "
          "hash equal")
    whole = b"".join(package_bytes(min(mib, 2)))
    part = b"".join(c.data for c in packages.Download(pb.DownloadPackageRequest(
        space="Default", package_id=name, version="1.0.0", offset=1000, length=CHUNK + 5),
        metadata=reader, timeout=60))
    check(part == whole[1000:1000 + CHUNK + 5], "a range comes back exact")
    fails(lambda: list(packages.Download(pb.DownloadPackageRequest(
        space="Default", package_id=name, version="1.0.0", offset=mib * CHUNK + 1),
        metadata=reader, timeout=60)), grpc.StatusCode.OUT_OF_RANGE, "a range past the end")
    listed = packages.List(pb.ListPackagesRequest(space="Default", package_id=name),
                           metadata=reader)
    check([i.version for i in listed.items] == ["1.0.0"] and listed.total == 1,
          "List shows the one version kept")
    fails(lambda: packages.Delete(pb.DeletePackageRequest(space="Default", package_id=name,
                                                          version="1.0.0"), metadata=reader),
          grpc.StatusCode.PERMISSION_DENIED, "a reader deleting it")
    gone = packages.Delete(pb.DeletePackageRequest(space="Default", package_id=name,
                                                   version="1.0.0"), metadata=admin)
    check(gone.sha256 == digest, "an admin deletes it")


if __name__ == "__main__":
    main()
