// The live request page script (api/web/templates/request.html) arrives with the request page.
