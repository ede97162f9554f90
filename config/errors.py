"""Error pages: the API's JSON envelope under /api/, plain pages elsewhere; never a stack trace."""

from django.http import HttpResponse, JsonResponse
from django.views.defaults import page_not_found


def _envelope(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": code, "message": message, "decline_code": None, "param": None}}, status=status
    )


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return _envelope("not_found", "Not found.", 404)
    return page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return _envelope("internal_error", "Something went wrong on our side.", 500)
    return HttpResponse("Something went wrong on our side.", status=500, content_type="text/plain")
