"""The payments app's REST API: serializers, the error envelope and viewsets a host app nests."""
