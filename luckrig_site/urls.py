from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from luckrig_site.metrics import metrics_view
from moderation import api as moderation_api
from moderation import views as moderation_views
from nodes.api import ShowcaseApi, WantedModelsApi
from showcase import api as showcase_api
from tracker import agent_api, api, circles_api, fingerprint, gateway_api

handler404 = "core.api_errors.not_found_json"
handler500 = "core.api_errors.server_error_json"

urlpatterns = [
    path("", include("showcase.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("api/health", api.HealthApi.as_view(), name="api-health"),
    path("api/contributors", api.ContributorCreateApi.as_view(), name="api-contributors"),
    path("api/contributors/me", api.ContributorMeApi.as_view(), name="api-contributor-me"),
    path("api/nodes", api.NodeCollectionApi.as_view(), name="api-nodes"),
    path("api/nodes/<str:node_id>", api.NodeItemApi.as_view(), name="api-node"),
    path("api/nodes/<str:node_id>/publish", api.NodePublishApi.as_view(), name="api-node-publish"),
    path("api/nodes/<str:node_id>/heartbeat", agent_api.NodeHeartbeatApi.as_view(), name="api-node-heartbeat"),
    path("api/nodes/<str:node_id>/usage", agent_api.NodeUsageApi.as_view(), name="api-node-usage"),
    path("api/nodes/<str:node_id>/tunnel", agent_api.NodeTunnelApi.as_view(), name="api-node-tunnel"),
    path("api/relays/<str:relay_id>/heartbeat", agent_api.RelayHeartbeatApi.as_view(), name="api-relay-heartbeat"),
    path("api/relays/<str:relay_id>/reports", agent_api.RelayReportsApi.as_view(), name="api-relay-reports"),
    path("api/relays/<str:relay_id>/tokens", gateway_api.RelayTokenApi.as_view(), name="api-relay-tokens"),
    path("api/relays/<str:relay_id>/catalog", gateway_api.RelayCatalogApi.as_view(), name="api-relay-catalog"),
    path("api/gateway", gateway_api.GatewayApi.as_view(), name="api-gateway"),
    path("api/nodes/<str:node_id>/metrics", api.NodeMetricsItemApi.as_view(), name="api-node-metrics"),
    path("api/fingerprint/verify", fingerprint.FingerprintVerifyApi.as_view(), name="api-fingerprint-verify"),
    path("api/tokens", api.TokenCreateApi.as_view(), name="api-tokens"),
    path("api/tracker-keys", api.TrackerKeysApi.as_view(), name="api-tracker-keys"),
    path("api/replay/timing", api.TimingUploadApi.as_view(), name="api-replay-timing"),
    path("api/replays", showcase_api.ReplayCollectionApi.as_view(), name="api-replays"),
    path("api/replays/<str:replay_id>", showcase_api.ReplayItemApi.as_view(), name="api-replay"),
    path("api/replay-sets", showcase_api.ReplaySetCollectionApi.as_view(), name="api-replay-sets"),
    path("api/replay-sets/<str:set_id>", showcase_api.ReplaySetItemApi.as_view(), name="api-replay-set"),
    path("api/showcase", ShowcaseApi.as_view(), name="api-showcase"),
    path("api/models/wanted", WantedModelsApi.as_view(), name="api-models-wanted"),
    path("api/circles", circles_api.CircleCollectionApi.as_view(), name="api-circles"),
    # The invite paths before /api/circles/<circle_id>, which would take "invites" for a circle id.
    path("api/circles/invites/<str:code>", circles_api.InvitePreviewApi.as_view(), name="api-circle-invite-preview"),
    path("api/circles/invites/<str:code>/join", circles_api.InviteJoinApi.as_view(), name="api-circle-join"),
    path("api/circles/<str:circle_id>", circles_api.CircleItemApi.as_view(), name="api-circle"),
    path("api/circles/<str:circle_id>/invites", circles_api.CircleInvitesApi.as_view(), name="api-circle-invites"),
    path(
        "api/circles/<str:circle_id>/invites/<str:invite_id>",
        circles_api.CircleInviteItemApi.as_view(),
        name="api-circle-invite",
    ),
    path("api/circles/<str:circle_id>/members", circles_api.CircleMembersApi.as_view(), name="api-circle-members"),
    path(
        "api/circles/<str:circle_id>/members/<str:contributor_id>",
        circles_api.CircleMemberItemApi.as_view(),
        name="api-circle-member",
    ),
    path("api/contributions", api.ContributionsApi.as_view(), name="api-contributions"),
    path("api/abuse/report", moderation_api.AbuseReportApi.as_view(), name="api-abuse-report"),
    path("api/abuse-contact", moderation_api.AbuseContactApi.as_view(), name="api-abuse-contact"),
    path("api/filter-rules", moderation_api.FilterRulesApi.as_view(), name="api-filter-rules"),
    path("api/moderation/flags", moderation_api.ModerationFlagApi.as_view(), name="api-moderation-flags"),
    path("policy", moderation_views.policy, name="policy"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]
