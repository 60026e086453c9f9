from django.urls import path

from showcase import arena_views, circle_views, model_views, views

app_name = "showcase"

urlpatterns = [
    path("", views.index, name="index"),
    path("nodes/<str:node_id>/", views.node_detail, name="node-detail"),
    path("models/<str:model_key>/", model_views.model_detail, name="model-detail"),
    path("compare/", arena_views.compare, name="compare"),
    path("queue/", views.queue_map, name="queue"),
    path("contribute/", views.contribute, name="contribute"),
    path("my/rigs/", views.my_rigs, name="my-rigs"),
    path("my/circles/", circle_views.my_circles, name="my-circles"),
    path("join/<str:code>", circle_views.join, name="join"),
    path("replays/", arena_views.replays, name="replays"),
    path("replays/open/", views.replay_open, name="replay-open"),
    path("replays/sets/<str:set_id>/", arena_views.replay_set_detail, name="replay-set-detail"),
    path("replays/<str:replay_id>/", views.replay_detail, name="replay-detail"),
    path("about/trust/", views.trust, name="trust"),
    path("report/", views.report, name="report"),
]
