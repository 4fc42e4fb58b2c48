from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from csp.decorators import csp_update
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

from . import views
from .auth import PasswordChangeView

api_v1 = [
    path("", include("curation.api.urls")),
    path("", include("training.api.urls")),
    path("", include("chat.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # ReDoc runs its search index in a Web Worker it creates from a blob: URL.
    path("redoc/", csp_update({"worker-src": ["blob:"]})(SpectacularRedocView.as_view(url_name="api-schema")), name="api-redoc"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("audit/", views.audit_log, name="audit-log"),
    path("curation/", include("curation.urls")),
    path("training/", include("training.urls")),
    path("chat/", include("chat.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
]

# MEDIA holds uploaded import files (identifiers included): it is never served as static files,
# not even with DEBUG. Owners and admins download an upload through curation:import-file.

handler403 = "medportal.views.permission_denied"
