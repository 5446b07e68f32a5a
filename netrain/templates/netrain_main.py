"""Every array task runs this script (from the batch's own code snapshot)."""

from models import model_configuration_function

from netrain import Netrain

app = Netrain(model_configuration_function)
app.run()
