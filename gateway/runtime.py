"""A gateway process: one trio run holding its libp2p peer and its hypercorn server."""

from __future__ import annotations

import logging
import os
import signal
import time
from functools import partial
from typing import cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

import keys
from gateway.accounts.database import Store
from gateway.accounts.jobs import JobStore
from gateway.accounts.limits import Limiter, Plans
from gateway.accounts.throttle import PasswordWork, SignInThrottle
from gateway.accounts.usage import UsageMeter
from gateway.accounts.users import Accounts
from gateway.api import peers as peers_api
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.image_store import ImageStore
from gateway.api.job_eta import eta_seconds
from gateway.api.job_runner import Jobs, Webhooks
from gateway.api.metrics import metrics_app
from gateway.api.response_cache import ResponseCache, advertised_revision
from gateway.api.services import Services
from gateway.config import GatewayConfig
from gateway.media import MediaLimits
from gateway.media.fetch import resolve_any, resolve_public
from gateway.mesh.events import MeshEvents
from gateway.mesh.record import GATEWAY_RECORD_TTL, gateway_record
from gateway.mesh.subscriptions import MeshSubscriptions
from gateway.routing.demand import publish_demand
from gateway.routing.peer_table import PeerTable
from gateway.routing.router import Router
from gateway.routing.tracker import Tracker
from node.p2p import logs
from node.p2p.admission import serve_rpc
from node.p2p.advertise import Advertiser
from node.p2p.host import PeerHost
from node.p2p.lan import discover_on_lan, on_lan
from node.p2p.readiness import StatusFile
from node.p2p.relay import settings_of
from node.p2p.tasks import supervised
from protocols import GATEWAYS_KEY, NodeRecord

logger = logging.getLogger(__name__)


async def run_gateway(config: GatewayConfig) -> None:
    status = StatusFile(config.ready_file)
    status.update(role="gateway", state="starting", pid=os.getpid())
    identity = keys.identity(config.data_dir)
    host = PeerHost.of(config.data_dir, "gateway", settings_of(config))
    logs.set_peer(host.peer_id)
    token_keys = keys.jwt_keys(config.data_dir)
    store = Store.open(config.accounts_dir)
    plans = Plans.from_config(config.plans, config.default_plan)
    accounts = Accounts(
        store,
        plans,
        token_keys.private,
        session_ttl=config.session_ttl,
        registration=config.registration,
        max_token_ttl=config.max_token_ttl,
        cost=keys.ScryptCost(config.scrypt_n),
        throttle=SignInThrottle(config.auth_per_address, config.auth_per_user),
        hashing=PasswordWork(config.password_hashers),
    )
    await accounts.load()
    auth = Authenticator(
        keys.jwt_keyset(config.data_dir),
        [accounts],
        audience=accounts.audience,
        max_ttl=config.max_token_ttl,
    )
    limiter = Limiter(accounts.plan_of)
    await limiter.load(store)
    usage = UsageMeter(store)

    table = PeerTable()
    tracker = Tracker(host, table)
    router = Router(
        table,
        tracker,
        config.routing,
        max_wait=config.max_queue_wait,
        node_queue=config.node_queue,
        max_queued=config.queue_limit,
        max_queued_per_user=config.queue_per_user,
    )
    hooks = resolve_any if config.webhook_private_hosts else resolve_public
    jobs = Jobs(
        JobStore(store),
        owner=host.peer_id,
        running=config.jobs_running,
        keep_for=config.job_ttl,
        webhooks=Webhooks(hooks, config.webhook_timeout) if config.webhooks else None,
        eta=partial(eta_seconds, table),
    )
    share = MeshEvents()
    services = Services(
        backend=router,
        auth=auth,
        peer_id=host.peer_id,
        request_timeout=config.request_timeout,
        health=lambda: {"nodes": len(tracker.clients), "routing_retries": router.retries},
        peers=lambda: peers_api.snapshot(
            table, host.peer_id, host.addrs(), time.time(), host.nat.relayed
        ),
        image_backend=router,
        image_store=ImageStore(
            config.data_dir / "images", config.image_ttl, config.image_store_bytes
        ),
        media=router,
        embeddings=router,
        media_limits=MediaLimits(
            max_audio_seconds=config.max_audio_seconds,
            fetch_image_urls=config.fetch_image_urls,
            image_fetch_timeout=config.image_fetch_timeout,
        ),
        meters=[limiter, usage],
        store=store,
        accounts=accounts,
        limiter=limiter,
        queue=router,
        cache=ResponseCache(config.cache_bytes, config.cache_ttl) if config.cache_bytes else None,
        cache_shared=config.cache_shared,
        revision=partial(advertised_revision, table),
        jobs=jobs,
    )
    services.metrics.observe_swarm(table, lambda: router.retries)
    apart = config.metrics_port is not None
    app = create_app(
        services,
        max_body_bytes=config.max_body_bytes,
        max_upload_bytes=config.max_upload_bytes,
        metrics_route=not apart,
    )
    jobs.app = app
    jobs.on_end.append(lambda state: services.metrics.jobs_ended.labels(state).inc())
    sync = MeshSubscriptions(
        host, accounts.audience, apply=share.apply, forget=tracker.forget_gateway
    )

    def met_gateway(record: NodeRecord) -> None:
        # A node that asks us for the gateways learns of every one we know, whether or not
        # its provider record was stored here (they go to the key's closest peers).
        host.hold_provider(GATEWAYS_KEY, record.peer_id, record.addrs)
        sync.connect_soon(record)

    tracker.on_gateway = met_gateway
    share.publish = sync.publish
    share.on_usage.append(limiter.note_remote)
    share.on_revoke.append(accounts.revoke_remote)
    usage.on_usage.append(
        lambda r: share.usage(
            r.user, 1, r.prompt_tokens + r.completion_tokens, r.images, r.audio_seconds
        )
    )
    accounts.on_revoke.append(share.revoked)
    # Providing GATEWAYS_KEY at every put: the gateways that joined after this one learn of
    # it, and name it to the nodes they meet (node.p2p.gateways).
    advertiser = Advertiser(
        host, identity, gateway_record(host, identity), GATEWAY_RECORD_TTL, provide_again=0.0
    )
    http = HypercornConfig()
    http.bind = [f"{config.host}:{config.port}"]
    http.accesslog = None
    http.errorlog = logging.getLogger("hypercorn.error")
    http.graceful_timeout = 5
    # A client may send on a kept-alive connection just as the server gives up on it and
    # sees the connection reset. The longer it stays open, the rarer that race (75 s, as
    # nginx keeps them; hypercorn's default is 5 s).
    http.keep_alive_timeout = 75
    scrape = HypercornConfig()
    scrape.bind = [f"{config.metrics_host}:{config.metrics_port or 0}"]
    scrape.accesslog = None
    scrape.errorlog = http.errorlog

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with host.running(config.listen, config.bootstrap), trio.open_nursery() as nursery:
            serve_rpc(host, {"events": sync.rpc_events})
            # An unexpected error in any of these is logged and the task started again.
            await nursery.start(partial(supervised, "gateway sync", sync.run, takes_status=True))
            await nursery.start(partial(supervised, "discovery", tracker.run, takes_status=True))
            nursery.start_soon(supervised, "advertiser", advertiser.run)
            nursery.start_soon(
                supervised,
                "demand",
                partial(publish_demand, router.dispatcher.demand, lambda: tracker.clients),
            )
            if config.mdns and on_lan(config.listen):
                nursery.start_soon(supervised, "mdns", partial(discover_on_lan, host))
            nursery.start_soon(partial(supervised, "accounts", accounts.run, takes_status=True))
            nursery.start_soon(partial(supervised, "jobs", jobs.run, takes_status=True))
            nursery.start_soon(
                supervised, "token keys", partial(watch_token_keys, config, auth, accounts)
            )
            stop = trio.Event()
            async with trio.open_nursery() as web:
                asgi = cast(ASGIFramework, app)
                binds = await web.start(partial(serve, asgi, http, shutdown_trigger=stop.wait))
                url = binds[0] if binds else f"http://{config.host}:{config.port}"
                if apart:
                    scraped = cast(ASGIFramework, metrics_app(services.metrics))
                    served = partial(serve, scraped, scrape, shutdown_trigger=stop.wait)
                    status.update(metrics_url=f"{(await web.start(served))[0]}/metrics")
                status.update(state="ready", peer_id=host.peer_id, addrs=host.addrs(), url=url)
                logger.info("gateway %s serving %s", host.peer_id, url)
                async for _ in signals:
                    break
                status.update(state="stopping")
                stop.set()  # hypercorn finishes open responses, then returns
            nursery.cancel_scope.cancel()
    store.close()
    status.update(state="stopped")


async def watch_token_keys(config: GatewayConfig, auth: Authenticator, accounts: Accounts) -> None:
    """Pick up token keys changed on disk (``bitinglip keys retire-jwt``, a new key after
    ``rotate-jwt``) within a second, without a restart."""
    seen = keys.jwt_files(config.data_dir)
    while True:
        await trio.sleep(1.0)
        now = keys.jwt_files(config.data_dir)
        if now == seen:
            continue
        try:
            auth.use_keys(keys.jwt_keyset(config.data_dir))
            accounts.use_signer(keys.jwt_keys(config.data_dir).private)
        except (OSError, ValueError, keys.NotAdmitted) as exc:  # a file half copied in
            logger.warning("token keys in %s unusable, keeping the old: %s", config.data_dir, exc)
            continue
        seen = now
        logger.info("token keys reloaded from %s", config.data_dir)
