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
from gateway.accounts.limits import Limiter, Plans
from gateway.accounts.usage import UsageMeter
from gateway.accounts.users import Accounts
from gateway.api import peers as peers_api
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.services import Services
from gateway.config import GatewayConfig
from gateway.mesh.events import MeshEvents
from gateway.mesh.record import GATEWAY_RECORD_TTL, gateway_record
from gateway.mesh.subscriptions import MeshSubscriptions
from gateway.routing.peer_table import PeerTable
from gateway.routing.router import Router
from gateway.routing.tracker import Tracker
from node.p2p.admission import serve_rpc
from node.p2p.advertise import Advertiser
from node.p2p.host import PeerHost
from node.p2p.readiness import StatusFile

logger = logging.getLogger(__name__)


async def run_gateway(config: GatewayConfig) -> None:
    status = StatusFile(config.ready_file)
    status.update(role="gateway", state="starting", pid=os.getpid())
    identity = keys.identity(config.data_dir)
    certificate = keys.certificate(config.data_dir, "gateway")
    operator_public = keys.operator_public(config.data_dir)
    token_keys = keys.jwt_keys(config.data_dir)
    store = Store.open(config.data_dir)
    plans = Plans.from_config(config.plans, config.default_plan)
    accounts = Accounts(
        store,
        plans,
        token_keys.private,
        session_ttl=config.session_ttl,
        registration=config.registration,
    )
    await accounts.load()
    limiter = Limiter(accounts.plan_of)
    await limiter.load(store)
    usage = UsageMeter(store)

    host = PeerHost(identity, operator_public)
    table = PeerTable()
    tracker = Tracker(host, table, certificate, operator_public)
    router = Router(table, tracker, config.routing)
    share = MeshEvents()
    services = Services(
        backend=router,
        auth=Authenticator(keys.jwt_keyset(config.data_dir), [accounts]),
        peer_id=host.peer_id,
        request_timeout=config.request_timeout,
        health=lambda: {"nodes": len(tracker.clients), "routing_retries": router.retries},
        peers=lambda: peers_api.snapshot(table, host.peer_id, host.addrs(), time.time()),
        image_backend=router,
        image_dir=config.data_dir / "images",
        meters=[limiter, usage],
        store=store,
        accounts=accounts,
        limiter=limiter,
    )
    services.metrics.observe_swarm(table, lambda: router.retries)
    app = create_app(services, max_body_bytes=config.max_body_bytes)
    sync = MeshSubscriptions(host, certificate, apply=share.apply, forget=tracker.forget_gateway)
    tracker.on_gateway = sync.connect_soon
    share.publish = sync.publish
    share.on_usage.append(limiter.note_remote)
    share.on_revoke.append(accounts.revoke_remote)
    usage.on_usage.append(
        lambda r: share.usage(r.user, 1, r.prompt_tokens + r.completion_tokens, r.images)
    )
    accounts.on_revoke.append(share.revoked)
    advertiser = Advertiser(
        host, identity, certificate, gateway_record(host, identity), GATEWAY_RECORD_TTL
    )
    http = HypercornConfig()
    http.bind = [f"{config.host}:{config.port}"]
    http.accesslog = None
    http.errorlog = logging.getLogger("hypercorn.error")
    http.graceful_timeout = 5

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with host.running(config.listen, config.bootstrap), trio.open_nursery() as nursery:
            serve_rpc(host, operator_public, {"events": sync.rpc_events})
            await nursery.start(sync.run)
            await nursery.start(tracker.run)
            nursery.start_soon(advertiser.run)
            nursery.start_soon(accounts.run)
            stop = trio.Event()
            async with trio.open_nursery() as web:
                asgi = cast(ASGIFramework, app)
                binds = await web.start(partial(serve, asgi, http, shutdown_trigger=stop.wait))
                url = binds[0] if binds else f"http://{config.host}:{config.port}"
                status.update(state="ready", peer_id=host.peer_id, addrs=host.addrs(), url=url)
                logger.info("gateway %s serving %s", host.peer_id, url)
                async for _ in signals:
                    break
                status.update(state="stopping")
                stop.set()  # hypercorn finishes open responses, then returns
            nursery.cancel_scope.cancel()
    store.close()
    status.update(state="stopped")
