"""``chargebridge engine``: watchers, scheduler, sync and the local API in one process.

Threads (named, so a stack dump reads itself): ``chargebridge-watch`` ingests files,
``chargebridge-sync`` (APScheduler's single worker) pushes charges, ``chargebridge-api`` serves
HTTP. Each thread has its own connection to the encrypted store; SQLite serialises writes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from agent import __version__, audit, keys
from agent.config import Config, FolderConfig, RcmConfig, SyncConfig
from agent.lock import HomeLock
from agent.pipeline import Pipeline
from agent.schedule import in_business_hours
from agent.store import Store, now
from agent.sync import Breaker, Outbox, SyncJob, SyncResult
from agent.watch import WatchService
from connectors.rcm.base import Target
from core.errors import ChargeBridgeError
from core.paths import Paths
from core.states import DocumentStatus, EncounterState, EngineState, OutboxState

log = logging.getLogger("chargebridge.engine")


NON_RETRYABLE = ("auth", "tls", "protocol", "config")


class Engine:
    def __init__(self, paths: Paths, config: Config) -> None:
        self.paths = paths
        self.config = config
        self._local = threading.local()
        self._key: bytes | None = None
        self._lock: HomeLock | None = None
        self.stopping = threading.Event()
        self._sync_lock = threading.Lock()
        self.syncing = False
        self.target: Target | None = None
        self.target_error = ""
        self.watch: WatchService | None = None
        self.watch_error = ""
        self._watch_thread: threading.Thread | None = None
        self._apply_lock = threading.Lock()
        self.setup_token: str | None = None  # first-run token, while no user exists
        self._threads: list[threading.Thread] = []
        self.scheduler: Any = None
        self.server: Any = None
        self.lan_server: Any = None  # LAN mode (H7): the TLS listener
        self._servers: list[Any] = []
        self.tls: Any = None  # agent.tls.TlsMaterial in LAN mode
        self.owner_token_sha256: str | None = None  # local owner token (agent/owner.py)
        self.port = 0
        self._wall = time.time()
        self._mono = time.monotonic()
        self._watchdog: Any = None  # agent.sdnotify.Watchdog under systemd with WatchdogSec

    # -- store per thread ----------------------------------------------------------------
    def store(self) -> Store:
        s = getattr(self._local, "store", None)
        if s is None:
            assert self._key is not None
            s = Store.open_with_key(self.paths, self._key)
            self._local.store = s
        return s

    # -- lifecycle ------------------------------------------------------------------------
    def open_local(self) -> None:
        """For one-shot CLI runs with no engine: key and crash recovery, no threads or API."""
        self._key = keys.store_key(self.paths, self.config.key_source, create=True)
        Outbox(self.store()).recover_sending()

    def start(self) -> None:
        self.paths.ensure()
        self._lock = HomeLock(self.paths.lock, "chargebridge engine").acquire()
        try:
            self._key = keys.store_key(self.paths, self.config.key_source, create=True)
            main = self.store()
            Pipeline.for_config(main, self.config).recover()
            Outbox(main).recover_sending()
            self.apply_rcm()
            self._start_watch()
            self._start_scheduler()
            from agent.users import begin_setup

            self.setup_token = begin_setup(main)
            self._start_api()
        except BaseException:
            self.stop()
            raise
        from agent import sdnotify  # systemd Type=notify: ready once the API answers (H8)

        sdnotify.notify(f"READY=1\nSTATUS=engine running, API on port {self.port}\nMAINPID={os.getpid()}")
        self._watchdog = sdnotify.Watchdog.start_if_wanted(self._alive)
        log.info("engine started (pid %d, api port %d)", os.getpid(), self.port)

    def _alive(self) -> bool:
        """For the systemd watchdog: the API thread serves, the scheduler runs, the store answers."""
        server, sched = self.server, self.scheduler
        if self.stopping.is_set() or server is None or sched is None or not sched.running:
            return False
        if not any(t.name == "chargebridge-api" and t.is_alive() for t in self._threads):
            return False
        self.store().conn.execute("SELECT 1").fetchone()
        return True

    def apply_rcm(self, rcm: RcmConfig | None = None) -> str:
        """(Re)build the RCM target from ``rcm`` (default: the current settings); returns why it
        cannot be built ("" when it can). The next sync and reconcile use it."""
        from agent.rcm import make_target

        if rcm is not None:
            self.config.rcm = rcm
        try:
            self.target = make_target(self.paths, self.config, store=self.store)
            self.target_error = ""
        except ChargeBridgeError as exc:
            self.target, self.target_error = None, f"{exc.title} — {exc.fix}"
        return self.target_error

    def apply_sync(self, sync: SyncConfig) -> None:
        """New schedule settings: business hours/days are read at every run; the interval
        reschedules the job."""
        old_interval = self.config.sync.interval_minutes
        self.config.sync = sync
        if self.scheduler is not None and sync.interval_minutes != old_interval:
            self.scheduler.reschedule_job("sync", trigger="interval", minutes=sync.interval_minutes)

    def apply_folders(self, folders: list[FolderConfig]) -> None:
        """New watched folders: stop the watch service (a file in flight finishes first) and start
        one over the new list."""
        with self._apply_lock:
            self._stop_watch()
            self.config.folders = folders
            self.watch_error = ""
            if not self.stopping.is_set():
                self._start_watch()

    def _stop_watch(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        t = self._watch_thread
        if t is not None:
            t.join(timeout=30)
            if t in self._threads:
                self._threads.remove(t)
        self.watch, self._watch_thread = None, None

    def _start_watch(self) -> None:
        if not self.config.folders:
            return
        pipe = Pipeline.for_config(None, self.config)
        watch = WatchService(pipe, self.config)
        self.watch = watch

        def run() -> None:
            pipe.store = self.store()  # this thread's own connection
            try:
                watch.run()
            except Exception as exc:
                self.watch_error = str(exc)
                log.error("folder watching stopped: %s", type(exc).__name__)

        t = threading.Thread(target=run, name="chargebridge-watch", daemon=True)
        t.start()
        self._watch_thread = t
        self._threads.append(t)

    def _start_scheduler(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        sched = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1, pool_kwargs={"thread_name_prefix": "chargebridge-sync"})},
            # coalesce: runs missed while asleep collapse into one; grace: a late run still happens
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        first = datetime.now(UTC) + timedelta(seconds=2)
        sched.add_job(self.scheduled_sync, "interval", minutes=self.config.sync.interval_minutes, id="sync",
                      next_run_time=first)
        sched.add_job(self._clock_check, "interval", seconds=30, id="clock")
        sched.add_job(self.scheduled_reconcile, "cron", hour=2, minute=15, id="reconcile-nightly")
        from agent.retention import schedule_jobs  # nightly prune and backup ([retention], [backup])

        schedule_jobs(self, sched)
        from agent import dbpoll

        dbpoll.schedule(self, sched)  # EHR database polls (H6), on the same single worker
        from agent import alerts

        alerts.schedule(self, sched)  # alert checks (H5), on the same single worker
        from agent import kpi_agg

        kpi_agg.schedule(self, sched)  # KPI aggregates of the days writes changed, off the request path (H16)
        from agent import eligibility_job

        eligibility_job.schedule(self, sched)  # 270/271 for the next clinic day's visits, evenings (H9)
        sched.start()
        self.scheduler = sched

    def _start_api(self) -> None:
        from agent import owner, tls
        from agent.api.app import create_app
        from agent.service import EngineService

        api = self.config.api
        lan = tls.tls_enabled(api)  # LAN mode (H7): https on [api] host:port, plain http on loopback
        self.tls = tls.ensure(self.paths, api) if lan else None
        self.owner_token_sha256 = owner.issue(self.paths)
        app = create_app(EngineService(self))
        self.server = self._serve(app, "127.0.0.1" if lan else api.host, api.local_port if lan else api.port,
                                  "chargebridge-api")
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        info = {"pid": os.getpid(), "port": self.port, "url": f"http://127.0.0.1:{self.port}",
                "started_at": now(), "version": __version__}
        if self.tls is not None:
            self.lan_server = self._serve(app, api.host, api.port, "chargebridge-api-lan", self.tls)
            lan_port = self.lan_server.servers[0].sockets[0].getsockname()[1]
            shown = (api.tls_names[0] if api.host in tls.WILDCARD_HOSTS else api.host).strip("[]")
            info.update(lan_url=f"https://{f'[{shown}]' if ':' in shown else shown}:{lan_port}",
                        ca_fingerprint=self.tls.ca_fingerprint)
            if self.scheduler is not None and not api.tls_cert:
                self.scheduler.add_job(self._renew_tls, "interval", hours=24, id="tls-renew")
        tmp = self.paths.engine_info.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.paths.engine_info)

    def _serve(self, app: Any, host: str, port: int, name: str, material: Any = None) -> Any:
        """One uvicorn listener on its own named thread; TLS (1.2+) when ``material`` is given."""
        import uvicorn

        kw: dict[str, Any] = {}
        if material is not None:
            kw = {"ssl_certfile": str(material.cert), "ssl_keyfile": str(material.key)}
        cfg = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                             date_header=False, timeout_graceful_shutdown=5, **kw)
        if material is not None:
            import ssl

            cfg.load()
            assert cfg.ssl is not None
            cfg.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        server = _quiet_server_class()(cfg)
        server.install_signal_handlers = lambda: None  # signals belong to the engine
        t = threading.Thread(target=server.run, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        self._servers.append(server)
        deadline = time.monotonic() + 20
        while not server.started and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise ChargeBridgeError(f"the API could not listen on {host}:{port}",
                                    "another program may use the port, or the address is not this machine's; "
                                    "check [api] host, port and local_port", key="api.port")
        return server

    def _renew_tls(self) -> None:
        """Daily: a server certificate near its end is replaced; new connections get the new one."""
        from agent import tls

        material = tls.ensure(self.paths, self.config.api)
        if self.lan_server is not None:
            self.lan_server.config.ssl.load_cert_chain(str(material.cert), str(material.key))
        self.tls = material

    def run(self) -> None:
        """Start, then block until :meth:`request_stop` (SIGTERM / Ctrl-C)."""
        self.start()
        try:
            while not self.stopping.wait(3600):
                pass
        finally:
            self.stop()

    def request_stop(self) -> None:
        self.stopping.set()

    def stop(self) -> None:
        self.stopping.set()
        from agent import sdnotify

        if self._watchdog is not None:
            self._watchdog.stop()
        sdnotify.notify("STOPPING=1")
        if self.scheduler is not None:
            try:
                self.scheduler.shutdown(wait=True)  # a batch in flight finishes and commits
            except Exception as exc:
                log.debug("scheduler shutdown: %s", type(exc).__name__)
            self.scheduler = None
        if self.watch is not None:
            self.watch.stop()
        if self._servers:
            from agent import notify

            notify.bump()  # open change-feed long-polls answer now instead of holding shutdown
            for server in self._servers:  # the loopback listener and, in LAN mode, the TLS one
                server.request_exit()
        for t in self._threads:
            t.join(timeout=10)
        try:
            (self.paths.engine_info).unlink()
        except FileNotFoundError:
            pass
        if self.setup_token is not None:  # the setup token lives only as long as this engine
            from agent.users import end_setup

            end_setup(self.paths)
            self.setup_token = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        log.info("engine stopped")

    # -- sync ----------------------------------------------------------------------------
    def scheduled_sync(self) -> None:
        if self.paused:
            return
        sc = self.config.sync
        if not in_business_hours(datetime.now().astimezone(), sc.business_hours, sc.business_days):
            return
        self.run_sync(force=False)

    def run_sync(self, *, force: bool = True, timeout: float = 600) -> SyncResult:
        """One sync run; a manual run ("Sync now") goes even when the breaker is open."""
        if self.target is None:
            self.apply_rcm()
        if self.target is None:
            return SyncResult(skipped=self.target_error or "no RCM is configured ([rcm] in chargebridge.toml)")
        if not self._sync_lock.acquire(timeout=timeout):
            return SyncResult(skipped="another sync run is still going")
        try:
            self.syncing = True
            from agent import notify

            notify.bump()
            store = self.store()
            sc = self.config.sync
            job = SyncJob(store, self.target, batch_size=self.config.rcm.batch_size,
                          breaker=Breaker(store, sc.max_failures, sc.breaker_minutes * 60), stop=self.stopping)
            res = job.run(force=force)
            with store.tx():
                store.set_setting("sync.last", json.dumps({"at": now(), **res.to_dict()}))
                if not res.skipped:  # sync health KPI and alerts read these (H5)
                    store.event("sync.run", detail={"ok": not res.error, "error_kind": str(res.error_kind),
                                                    "delivered": res.delivered, "failed": res.failed})
            self._after_sync(store)
            if res.delivered and self.scheduler is not None:  # reconcile after each sync that sent something
                self.scheduler.add_job(self.scheduled_reconcile, id="reconcile-after-sync", replace_existing=True)
            return res
        finally:
            self.syncing = False
            self._sync_lock.release()
            from agent import notify

            notify.bump()

    def _after_sync(self, store: Store) -> None:
        """What follows every sync run: the payer's answers — FHIR ClaimResponses for open claims,
        the clearinghouse's 999/277CA/835/271 files from ``[x12] inbound`` — and the rules that
        late eligibility answers change. Each step fails alone (logged without patient data): the
        sync result stands, and the next run tries again."""
        from agent import eligibility_job, outcomes, x12_inbound

        target = self.target
        steps: list[tuple[str, Callable[[], object]]] = [
            ("claim outcomes", lambda: outcomes.read(store, target)),
            ("clearinghouse inbound", lambda: x12_inbound.poll_target(store, target)),
            ("eligibility rules", lambda: eligibility_job.after_answers(store, self.config)),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as exc:
                log.warning("after the sync run, %s failed (%s)", name, type(exc).__name__)

    def run_reconcile(self, start: Any = None, end: Any = None) -> dict[str, Any]:
        """Reconcile a window (default: the last 90 days) on the sync worker's lock."""
        from agent import reconcile
        from agent.mismatches import default_window
        from connectors.rcm.base import TargetError

        if self.target is None:
            self.apply_rcm()
        if self.target is None:
            return {"skipped": self.target_error or "no RCM is configured"}
        s, e = default_window()
        with self._sync_lock:
            try:
                return reconcile.run(self.store(), self.target, start=start or s, end=end or e).to_dict()
            except TargetError as exc:
                return {"skipped": f"the RCM could not be read: {exc}"}

    def scheduled_reconcile(self) -> None:
        if not self.paused:
            self.run_reconcile()

    def sync_now(self) -> None:
        """Run a sync as soon as the sync worker is free (no waiting)."""
        if self.scheduler is None:
            return
        from apscheduler.jobstores.base import JobLookupError

        for _ in range(3):
            try:
                self.scheduler.add_job(self.run_sync, id="sync-now", replace_existing=True)
                return
            except JobLookupError:
                # the previous one-shot "sync-now" finished and was removed between the conflict
                # check and the replace (APScheduler 3 race); adding again now succeeds
                continue

    def _clock_check(self) -> None:
        """Catch-up after the machine slept or the clock jumped: wall time and monotonic disagree."""
        wall, mono = time.time(), time.monotonic()
        drift = (wall - self._wall) - (mono - self._mono)
        self._wall, self._mono = wall, mono
        if abs(drift) > 120:
            log.info("clock jump or sleep of %.0f s detected; running a catch-up sync", drift)
            self.scheduled_sync()

    @property
    def paused(self) -> bool:
        return self.store().setting("sync.paused") == "1"

    def set_paused(self, paused: bool, *, actor: str = "engine") -> None:
        store = self.store()
        with store.tx():
            store.set_setting("sync.paused", "1" if paused else "0")
            store.event("sync.paused" if paused else "sync.resumed")
            audit.record(store, actor=actor, action="sync.pause" if paused else "sync.resume", target="sync")

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return compute_status(self.store(), self.config, syncing=self.syncing, target_error=self.target_error,
                              watch=self.watch, watch_error=self.watch_error, next_sync=self._next_sync())

    def _next_sync(self) -> str:
        job = self.scheduler.get_job("sync") if self.scheduler is not None else None
        t = getattr(job, "next_run_time", None)
        return t.astimezone(UTC).isoformat(timespec="seconds") if t else ""


def _quiet_server_class():  # type: ignore[no-untyped-def]
    import asyncio

    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn's main loop wakes every 100 ms to poll ``should_exit``; an engine that sits idle
        for days should not. This one sleeps on an event that :meth:`request_exit` sets."""

        _loop: asyncio.AbstractEventLoop | None = None
        _exit: asyncio.Event | None = None

        async def main_loop(self) -> None:
            self._loop = asyncio.get_running_loop()
            self._exit = asyncio.Event()
            if self.should_exit:
                return
            await self._exit.wait()

        def request_exit(self) -> None:
            self.should_exit = True
            if self._loop is not None and self._exit is not None:
                self._loop.call_soon_threadsafe(self._exit.set)

    return QuietServer


def compute_status(store: Store, cfg: Config, *, syncing: bool = False, target_error: str = "",
                   watch: WatchService | None = None, watch_error: str = "",
                   next_sync: str = "") -> dict[str, Any]:
    """The typed status every client shows; also used by ``chargebridge status`` with no engine."""
    from agent import notify

    counts = store.counts()
    outbox = Outbox(store).counts()
    last = json.loads(store.setting("sync.last", "{}") or "{}")
    paused = store.setting("sync.paused") == "1"
    breaker_until = store.setting("sync.breaker_until", "")
    breaker_open = bool(breaker_until) and breaker_until > now()
    connectors = []
    for fc in cfg.folders:
        ok = fc.path.is_dir() and not watch_error
        connectors.append({"name": f"folder {fc.path}", "kind": "ehr", "healthy": ok,
                           "detail": watch_error or ("watching" if ok else "folder missing")})
    from agent import dbpoll

    databases = dbpoll.connectors(store, cfg)  # EHR databases
    connectors += databases
    databases_down = [c for c in databases if not c["healthy"]]
    if cfg.rcm.type:
        last_kind = last.get("error_kind", "")
        healthy = not target_error and not breaker_open and not last.get("error")
        detail = target_error or (last.get("error") or "ok" if last else "not synced yet")
        connectors.append({"name": f"rcm {cfg.rcm.type}", "kind": "rcm", "healthy": healthy, "detail": detail})
    else:
        last_kind = ""
    reason = ""
    if syncing:
        state = EngineState.SYNCING
    elif paused:
        state, reason = EngineState.PAUSED, "sync is paused"
    elif target_error:
        state, reason = EngineState.ERROR, target_error
    elif breaker_open:
        state = EngineState.ERROR
        reason = (f"sync paused after repeated failures until {breaker_until}: "
                  f"{store.setting('sync.last_error')}")
    elif last_kind in NON_RETRYABLE:
        state, reason = EngineState.ERROR, last.get("error", "")
    elif watch_error:
        state, reason = EngineState.ERROR, watch_error
    elif databases_down:  # charges stop flowing from that EHR: the tray must not show "all good"
        state = EngineState.ERROR
        reason = "; ".join(f"{c['name']}: {c['detail']}" for c in databases_down)
    elif (counts.get(DocumentStatus.QUARANTINED, 0) or counts.get(EncounterState.NEEDS_REVIEW, 0)
          or outbox.get(OutboxState.REJECTED, 0)):
        state = EngineState.ATTENTION
        reason = ", ".join(f"{n} {what}" for n, what in (
            (counts.get(DocumentStatus.QUARANTINED, 0), "in quarantine"),
            (counts.get(EncounterState.NEEDS_REVIEW, 0), "need review"),
            (outbox.get(OutboxState.REJECTED, 0), "rejected by the RCM")) if n)
    else:
        state = EngineState.IDLE
    return {
        "state": state.value, "reason": reason, "version": __version__, "paused": paused,
        "counts": {k.value: counts.get(k, 0) for k in (*EncounterState, DocumentStatus.QUARANTINED)},
        "outbox": outbox, "last_sync": last, "next_sync": "" if paused else next_sync,
        "breaker_until": breaker_until if breaker_open else "",
        "connectors": connectors, "change_seq": notify.seq(),
        "test_mode": cfg.mode.test,  # [mode] test (H8): the tray and window show a banner
        "eligibility": _eligibility(store),  # upcoming visits without active coverage, by status (H9)
    }


def _eligibility(store: Store) -> dict[str, int]:
    from agent import eligibility

    return eligibility.summary(store)
